"""Multi-process CV through Lightning DDP on the CPU (2 gloo processes, the Kaggle 2×T4 path): the OOF holds every
sample exactly once and the same ids, in the same order, as the single-process run."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ddp_two_processes_oof_matches_single_process_ids(finished_run, tmp_path):
    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": REPO}
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir",
                           str(run_dir), "--set", "train.accelerator=cpu", "--set", "train.devices=2", "--set",
                           "train.strategy=ddp", "--set", "train.epochs=1"],
                          env=env, capture_output=True, text=True, timeout=400)
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
