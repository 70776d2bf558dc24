"""Crash-exact resume: `kitpkg cv` is SIGKILLed mid-epoch in a subprocess, its newest checkpoint is truncated, and the
re-run produces the same OOF and test predictions as an uninterrupted run (CPU, deterministic: to 1e-6)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from kitpkg.train.checkpoint import resumable

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cv(config_path, run_dir, **env):
    environ = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": REPO, **env}
    return subprocess.run([sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir",
                           str(run_dir)], env=environ, capture_output=True, text=True, timeout=300)


def test_kill_mid_epoch_then_resume_gives_the_same_oof(finished_run, tmp_path):
    config_path, reference_dir, _ = finished_run  # same config, run uninterrupted in-process
    run_dir = tmp_path / "killed"
    # fold 1, after optimizer step 5 (mid-epoch: checkpoints every 2 steps, so steps 2 and 4 are on disk)
    killed = _cv(config_path, run_dir, KITPKG_TEST_KILL_AT="1:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["folds"]["0"]["status"] == "done" and state["folds"]["1"]["status"] == "running"
    ckpts = resumable(run_dir / "fold1" / "ckpt")
    assert [p.name for p in ckpts] == ["ckpt-00000002-0.ckpt", "ckpt-00000004-0.ckpt"]
    assert not (run_dir / "oof.csv").exists()
    # a truncated newest checkpoint (e.g. a Drive sync cut short) must be detected and the one before it used
    with open(ckpts[-1], "r+b") as f:
        f.truncate(os.path.getsize(ckpts[-1]) // 2)
    fold0_mtime = (run_dir / "oof_fold0.csv").stat().st_mtime_ns

    resumed = _cv(config_path, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "truncated or damaged" in resumed.stderr
    assert "CV auc" in resumed.stdout and "oof.csv" in resumed.stdout
    assert (run_dir / "oof_fold0.csv").stat().st_mtime_ns == fold0_mtime  # the finished fold was skipped
    for name in ("oof.csv", "test_predictions.csv"):
        ours, reference = pd.read_csv(run_dir / name, dtype={"id": str}), pd.read_csv(reference_dir / name,
                                                                                       dtype={"id": str})
        assert list(ours["id"]) == list(reference["id"])
        assert (ours["prediction"] - reference["prediction"]).abs().max() <= 1e-6, name
    ours = pd.read_csv(run_dir / "fold1" / "metrics.csv")
    reference = pd.read_csv(reference_dir / "fold1" / "metrics.csv")
    assert (ours["val_loss"] - reference["val_loss"]).abs().max() <= 1e-6
