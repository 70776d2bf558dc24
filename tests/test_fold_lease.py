"""Fold leases: a fold that a live process is training (here, or on another machine sharing the run directory) is never
started a second time; a lease whose heartbeat stopped, or whose process on this host is gone, does not block."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from kitpkg.config import load_config
from kitpkg.errors import KitError
from kitpkg.train import lease as L
from kitpkg.train.cv import open_run, run_cv
from kitpkg.train.parallel import run_parallel_cv


def _lease(run_dir, k, host, pid, age_s):
    path = run_dir / "folds" / f"fold{k}.lease"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "heartbeat": time.time() - age_s}))
    return path


@pytest.fixture
def lease_config(tmp_path, tfrecord_manifest):
    from conftest import write_train_config

    return load_config(write_train_config(tmp_path, tfrecord_manifest))


def test_a_live_lease_blocks_the_fold_in_cv_and_parallel_folds(lease_config, tmp_path):
    run_dir = tmp_path / "run"
    _lease(run_dir, 1, "colab-7f3a", 4242, age_s=12)  # another machine sharing the Drive folder, beating 12 s ago
    expected = r"fold 1 is being trained by colab-7f3a pid 4242 \(its lease .*fold1.lease was refreshed \d+ s ago\)"
    with pytest.raises(KitError, match=expected):
        run_cv(lease_config, run_dir, folds=[0, 1])
    with pytest.raises(KitError, match=expected):
        run_parallel_cv(lease_config, 2, run_dir)  # refused before any worker starts
    assert not list(run_dir.glob("fold*/ckpt/*.ckpt")), "no fold was started"


def test_a_stale_or_dead_lease_does_not_block_and_a_held_one_beats(lease_config, tmp_path, monkeypatch):
    _, state = open_run(lease_config, tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setattr(L, "HEARTBEAT_S", 0.05)
    for host, pid, age in (("colab-7f3a", 4242, L.STALE_AFTER_S + 1),  # another machine's, stopped beating
                           (socket.gethostname(), dead.pid, 1)):  # this machine's, its process gone (kill -9)
        path = _lease(state.run_dir, 0, host, pid, age)
        with L.hold_fold(state, 0):
            held = json.loads(path.read_text())
            assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
            deadline = time.monotonic() + 5
            while json.loads(path.read_text())["heartbeat"] == held["heartbeat"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert json.loads(path.read_text())["heartbeat"] > held["heartbeat"], "refreshed while held"
            assert L.is_live(L.read_lease(path), time.time(), socket.gethostname()), "others here see it live"
        assert not path.exists(), "released"

