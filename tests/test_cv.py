"""K-fold CV end to end on the tiny TFRecord shards: OOF exactly once, CV score, submission, full-state checkpoints,
portable run directory, finished folds skipped, changed config refused."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kitpkg.config import load_config
from kitpkg.errors import KitError
from kitpkg.train import cv
from kitpkg.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_oof_holds_every_train_sample_exactly_once(finished_run, tfrecord_manifest):
    _, run_dir, result = finished_run
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    assert list(oof.columns[:4]) == ["id", "fold", "target", "prediction"]
    assert oof["id"].is_unique
    assert dict(zip(oof["id"], oof["fold"])) == tfrecord_manifest.fold_of()
    assert oof["prediction"].between(0, 1).all()
    assert set(result.scores) == set(tfrecord_manifest.folds())
    assert result.mean == pytest.approx(sum(result.scores.values()) / len(result.scores))
    for k in result.scores:  # per-fold parts are what was merged
        part = pd.read_csv(run_dir / f"oof_fold{k}.csv", dtype={"id": str})
        assert part.equals(oof[oof["fold"] == k].reset_index(drop=True))
    summary = result.summary()
    assert "CV auc" in summary and str(run_dir / "oof.csv") in summary and "submission" in summary


def test_submission_in_competition_format(finished_run, tfrecord_manifest):
    _, run_dir, result = finished_run
    sub = pd.read_csv(result.submission_path, dtype={"image_name": str})
    assert list(sub.columns) == ["image_name", "target"]
    test_ids = [i for s in tfrecord_manifest.select("test") for i in s.ids]
    assert list(sub["image_name"]) == test_ids
    folds = [pd.read_csv(run_dir / f"test_fold{k}.csv", dtype={"id": str}) for k in result.scores]
    mean = sum(f["s0"] for f in folds) / len(folds)  # predict.average: prob -> mean of probabilities over folds
    assert (sub["target"] - mean).abs().max() < 1e-6


def test_best_checkpoint_has_full_state_and_run_dir_is_portable(finished_run):
    _, run_dir, _ = finished_run
    state = json.loads((run_dir / "state.json").read_text())
    assert all(f["status"] == "done" for f in state["folds"].values())
    ckpt = load_checkpoint(run_dir / "fold0" / "ckpt" / "best.ckpt")  # weights_only=True loads it
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(ckpt)
    assert "combined_loader" in ckpt["loops"]["fit_loop"]["state_dict"]  # the loader's position
    needle = str(run_dir.parent).encode()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"absolute path inside {path}"


def test_rerun_skips_finished_folds(finished_run, monkeypatch):
    config_path, run_dir, result = finished_run

    def boom(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(cv, "fit_fold", boom)
    again = cv.run_cv(load_config(config_path, overrides=["data.num_workers=1"]), run_dir)  # workers: no new run
    assert again.scores == result.scores


def test_changed_config_is_refused(finished_run):
    config_path, run_dir, _ = finished_run
    with pytest.raises(KitError, match=r"another config \(optim.lr: 0.003 -> 0.01; train.epochs: 2 -> 3\)"):
        cv.run_cv(load_config(config_path, overrides=["optim.lr=0.01", "train.epochs=3"]), run_dir)


def test_predict_command_rewrites_submission_with_other_tta(finished_run, tmp_path):
    config_path, run_dir, result = finished_run
    from kitpkg.cli import main

    out = tmp_path / "sub_notta.csv"
    assert main(["predict", "--config", str(config_path), "--run-dir", str(run_dir), "--tta", "", "--out",
                 str(out)]) == 0
    sub, base = pd.read_csv(out), pd.read_csv(result.submission_path)
    assert list(sub["image_name"]) == list(base["image_name"])
    assert not (sub["target"] - base["target"]).abs().max() < 1e-9  # without TTA the numbers differ
