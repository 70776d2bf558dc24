"""Multi-process CV through Lightning DDP on the CPU (2 gloo processes, the Kaggle 2×T4 path): the OOF holds every
sample exactly once and the same ids, in the same order, as the single-process run."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import run_ddp_cv

pytestmark = pytest.mark.slow


def test_ddp_two_processes_oof_matches_single_process_ids(finished_run, tmp_path):
    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "ddp"
    proc = run_ddp_cv(config_path, run_dir, "train.epochs=1", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("CV auc") == 1  # only rank 0 reports
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    reference = pd.read_csv(reference_dir / "oof.csv", dtype={"id": str})
    assert oof["id"].is_unique
    assert list(oof["id"]) == list(reference["id"]) and list(oof["fold"]) == list(reference["fold"])
    sub = pd.read_csv(run_dir / "submission.csv", dtype={"image_name": str})
    assert list(sub["image_name"]) == list(pd.read_csv(reference_dir / "submission.csv",
                                                       dtype={"image_name": str})["image_name"])
    assert not list(run_dir.glob("fold*/parts/*.csv"))  # per-rank parts merged and removed


def test_ddp_with_the_whole_recipe_covers_every_sample_once(finished_run, tmp_path):
    """Augmentation stages, oversampling, metadata, mixup, EMA, pos_weight and early stopping under 2-process DDP:
    every rank trains the same number of batches (else DDP hangs: the timeout fails it) and the OOF still holds every
    sample exactly once."""
    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "ddp-recipe"
    recipe = ["data.aug.preset=isic", "data.sampling.class_weights={1: 3}",
              "model.meta=[sex, age_approx, anatom_site_general_challenge]",
              "train.mixup={mixup_alpha: 0.4, cutmix_alpha: 1.0}", "train.ema={decay: 0.9}", "train.pos_weight=2",
              "train.early_stopping={patience: 1}"]
    proc = run_ddp_cv(config_path, run_dir, "train.epochs=1", *recipe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    reference = pd.read_csv(reference_dir / "oof.csv", dtype={"id": str})
    assert oof["id"].is_unique and sorted(oof["id"]) == sorted(reference["id"])
    assert oof["prediction"].between(0, 1).all()


def test_ddp_fine_tunes_each_fold_from_the_same_fold_of_another_run(finished_run, tmp_path):
    """model.init_from under 2-process DDP: both ranks load fold k's weights of the source run and train to the end."""
    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "ddp-init"
    proc = run_ddp_cv(config_path, run_dir, "train.epochs=1", f"model.init_from={reference_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    assert oof["id"].is_unique and len(oof) == len(pd.read_csv(reference_dir / "oof.csv"))
