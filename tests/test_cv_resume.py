"""Crash-exact resume: `kitpkg cv` is SIGKILLed mid-epoch in a subprocess, its newest checkpoint is truncated, and the
re-run produces the same OOF and test predictions as an uninterrupted run (CPU, deterministic: to 1e-6)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from killhook.kill_at import kill_environ
from kitpkg.train.checkpoint import resumable
from kitpkg.train.runstate import RunState

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cv(config_path, run_dir, *args, kill_at=None, **env):
    """`kitpkg cv` in a subprocess; `kill_at`: killed (SIGKILL) at that point of a fold (killhook/kill_at.py)."""
    environ = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": REPO, **env}
    if kill_at is not None:
        environ = kill_environ(kill_at, environ)
    return subprocess.run(_cv_argv(config_path, run_dir, *args), env=environ, capture_output=True, text=True,
                          timeout=300)


def _cv_argv(config_path, run_dir, *args):
    return [sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir", str(run_dir), *args]


def test_kill_mid_epoch_then_resume_gives_the_same_oof(finished_run, tmp_path):
    config_path, reference_dir, _ = finished_run  # same config, run uninterrupted in-process
    run_dir = tmp_path / "killed"
    # fold 1, after optimizer step 7: mid-epoch 2 whether its 33 samples make 4 or 5 batches (checkpoints every 2)
    killed = _cv(config_path, run_dir, kill_at="1:7")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = RunState.read(run_dir)
    assert state.fold(0).status == "done" and state.fold(1).status == "running"
    ckpts = resumable(run_dir / "fold1" / "ckpt")
    assert len(ckpts) == 2 and ckpts[-1].name == "ckpt-00000006-0.ckpt"  # "-0": written mid-epoch
    assert not (run_dir / "oof.csv").exists()
    # a truncated newest checkpoint (e.g. a Drive sync cut short) must be detected and the one before it used
    cut = ckpts[-1].with_name("ckpt-00000007-0.ckpt")
    cut.write_bytes(ckpts[-1].read_bytes()[:os.path.getsize(ckpts[-1]) // 2])
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


def test_two_cv_processes_on_one_run_dir_keep_every_fold(finished_run, tmp_path):
    # `kitpkg cv --folds 0,2` and `--folds 1` started together (two GPUs, or two machines on one Drive folder):
    # each records its own folds; neither forgets the other's (the last writer of one state file used to win)
    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "shared"
    environ = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": REPO}
    procs = [subprocess.Popen(_cv_argv(config_path, run_dir, "--folds", folds), env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for folds in ("0,2", "1")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    state = RunState.read(run_dir)
    assert state.done_folds() == [0, 1, 2]
    parts = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("oof_fold*.csv")}
    again = _cv(config_path, run_dir)  # finishes OOF and submission from the recorded folds, retraining none
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("oof_fold*.csv")} == parts
    ours, reference = (pd.read_csv(d / "oof.csv", dtype={"id": str}) for d in (run_dir, reference_dir))
    assert list(ours["id"]) == list(reference["id"])
    assert (ours["prediction"] - reference["prediction"]).abs().max() <= 1e-6
