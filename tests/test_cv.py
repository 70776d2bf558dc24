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
from kitpkg.train.runstate import RunState

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
    folds = RunState.read(run_dir).folds()
    assert sorted(folds) == [0, 1, 2] and all(f.status == "done" for f in folds.values())
    ckpt = load_checkpoint(run_dir / "fold0" / "ckpt" / "best.ckpt")  # weights_only=True loads it
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(ckpt)
    assert "combined_loader" in ckpt["loops"]["fit_loop"]["state_dict"]  # the loader's position
    needle = str(run_dir.parent).encode()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"absolute path inside {path}"


def test_each_fold_records_where_the_time_goes(finished_run):
    _, run_dir, _ = finished_run
    for record in RunState.read(run_dir).folds().values():
        assert record.wall_s > 0 and record.train_img_s > 0 and record.loader_img_s > 0
        assert 0 <= record.loader_wait <= 1
        assert (record.device, record.precision) == ("CPU", "32-true")


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


def _copy_run(finished_run, tmp_path):
    import shutil

    config_path, run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)  # the session's run stays untouched for the other tests
    return load_config(config_path), copy


def _set_status(run_dir, fold, status):
    path = run_dir / "folds" / f"fold{fold}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": status}))


def test_deleting_a_fold_folder_retrains_it(finished_run, tmp_path):
    # the advice of the "no intact checkpoint" error must work even when the fold had finished training
    import shutil

    config, run_dir = _copy_run(finished_run, tmp_path)
    _set_status(run_dir, 1, "trained")  # killed after training, before its predictions were written
    shutil.rmtree(run_dir / "fold1")
    result = cv.run_cv(config, run_dir)
    assert not result.pending and (run_dir / "fold1" / "ckpt" / "best.ckpt").is_file()
    assert RunState.read(run_dir).fold(1).status == "done"


def test_fresh_fit_clears_damaged_checkpoints_of_an_earlier_attempt(finished_run, tmp_path):
    from kitpkg.train.checkpoint import resumable

    config, run_dir = _copy_run(finished_run, tmp_path)
    _set_status(run_dir, 2, "running")
    ckpt_dir = run_dir / "fold2" / "ckpt"
    for p in ckpt_dir.iterdir():
        p.unlink()
    (ckpt_dir / "ckpt-99999999-0.ckpt").write_bytes(b"PK\x03\x04 cut short by a Drive sync")  # nothing to resume
    with pytest.warns(RuntimeWarning, match="truncated or damaged"):
        result = cv.run_cv(config, run_dir)
    assert not result.pending
    names = [p.name for p in resumable(ckpt_dir)]
    # the stale file is gone, and the finished fold keeps only the weights it predicts with (best.ckpt)
    assert names == [] and (ckpt_dir / "best.ckpt").is_file()


def test_folds_outside_the_manifest_name_the_key(finished_run, tmp_path):
    config, run_dir = _copy_run(finished_run, tmp_path)
    config.data.folds = [0, 7]
    with pytest.raises(KitError, match=r"data.folds: folds \[7\] are not in the manifest"):
        cv.run_cv(config, run_dir, folds=[0])  # would otherwise report fold 7 as "still to run" forever
    config.data.folds = None
    with pytest.raises(KitError, match=r"--folds: folds \[5\] are not in the manifest .* \(it has folds \[0, 1, 2\]\)"):
        cv.run_cv(config, run_dir, folds=[5])


class _Payload:
    def __reduce__(self):  # unpickling it would write the marker file named by KITPKG_TEST_MARKER
        import os

        return (open, (os.environ["KITPKG_TEST_MARKER"], "w"))


def test_resume_skips_a_newest_checkpoint_the_safe_loader_refuses(finished_run, tmp_path, monkeypatch):
    import torch

    config, run_dir = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KITPKG_TEST_MARKER", str(marker))
    _set_status(run_dir, 2, "running")  # killed after its last checkpoint: the re-run resumes fold 2
    crafted = run_dir / "fold2" / "ckpt" / "ckpt-99999999-0.ckpt"
    torch.save({"state_dict": {}, "evil": _Payload()}, crafted)  # newest by name, a valid zip
    with pytest.warns(RuntimeWarning, match="ckpt-99999999-0.ckpt is truncated or damaged, or holds objects"):
        result = cv.run_cv(config, run_dir)
    assert not result.pending and RunState.read(run_dir).is_done(2)
    assert not marker.exists()  # never unpickled, by kitpkg or by Lightning's fit(ckpt_path)


def test_a_config_with_an_unknown_name_writes_nothing(tfrecord_manifest, tmp_path):
    from conftest import write_train_config

    config_path = write_train_config(tmp_path, tfrecord_manifest)
    run_dir = tmp_path / "run"
    for override, key in (("sched.name=cosinee", "sched.name"), ("model.name=resnet5O", "model.name"),
                          ("optim.name=adamw2", "optim.name"), ("train.loss=ce", "train.loss")):
        with pytest.raises(KitError, match=key):
            cv.run_cv(load_config(config_path, overrides=[override]), run_dir)
        assert not run_dir.exists()  # refused before anything was written
    # a run dir whose first run died before any checkpoint (e.g. a crash in the first batch) takes a fixed config
    cv.open_run(load_config(config_path, overrides=["train.epochs=1"]), run_dir)[1].update_fold(0, status="running")
    _, state = cv.open_run(load_config(config_path), run_dir)
    assert state.get("config")["train.epochs"] == 2
