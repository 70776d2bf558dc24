"""Checkpoints are copied into the run directory off the training thread: a slow copy (Drive) does not hold training
up, the copies land in order and are pruned in order, a failed copy stops the fit on the training thread with the
usual one-line error, and a kill mid-copy leaves the newest complete checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from kitpkg.train import checkpoint as C
from kitpkg.train.checkpoint import BEST, RunCheckpoints, ckpt_name, latest_intact, load_checkpoint, resumable


class StateTrainer:
    """What RunCheckpoints asks of a trainer when it writes: a collective save (rank 0 writes) and the step."""

    is_global_zero = True

    def __init__(self):
        self.global_step = 0

    def save_checkpoint(self, path, weights_only=False):
        torch.save({"state_dict": {"w": torch.full((64,), float(self.global_step))}, "step": self.global_step}, path)


def _save_at(writer, trainer, step, name=None):
    trainer.global_step = step
    started = time.perf_counter()
    writer._save(trainer, name or ckpt_name(step, after_validation=False), prune=name is None)
    return time.perf_counter() - started


class GatedCopy:
    """atomic_copy that waits for `gate` first and records the copies in order and how many ran at once."""

    def __init__(self, copy):
        self.copy, self.gate, self.order, self.running, self.most = copy, threading.Event(), [], 0, 0
        self._lock = threading.Lock()

    def __call__(self, src, dest):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.gate.wait(30), "the test never opened the gate"
            self.copy(src, dest)
            self.order.append(Path(dest).name)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def gated(monkeypatch):
    copy = GatedCopy(C.atomic_copy)
    monkeypatch.setattr(C, "atomic_copy", copy)
    return copy


def test_a_slow_copy_does_not_block_the_training_thread(tmp_path, gated):
    writer, trainer = RunCheckpoints(tmp_path / "ckpt", 2, 2, "val_auc"), StateTrainer()
    blocked = _save_at(writer, trainer, 2)  # the copy cannot even start: only the local save happened
    assert blocked < 5 and resumable(tmp_path / "ckpt") == []
    assert len(list(Path(writer._local).iterdir())) == 1
    gated.gate.set()
    writer.flush()
    assert [p.name for p in resumable(tmp_path / "ckpt")] == ["ckpt-00000002-0.ckpt"]
    assert load_checkpoint(tmp_path / "ckpt" / "ckpt-00000002-0.ckpt")["step"] == 2
    assert list(Path(writer._local).iterdir()) == []  # the local file goes once its copy is complete
    writer.on_fit_end(None, None)
    assert writer._local is None


def test_copies_land_in_order_one_at_a_time_and_prune_after_the_newer_is_complete(tmp_path, gated, monkeypatch):
    monkeypatch.setattr(C, "MAX_PENDING", 100)  # every save handed off before the gate opens
    folder = tmp_path / "ckpt"
    writer, trainer = RunCheckpoints(folder, 2, 2, "val_auc"), StateTrainer()
    for step in (2, 4):
        _save_at(writer, trainer, step)
    _save_at(writer, trainer, 4, BEST)
    _save_at(writer, trainer, 4, ckpt_name(4, after_validation=True))
    for step in (6, 8):
        _save_at(writer, trainer, step)
    _save_at(writer, trainer, 8, BEST)  # a second best.ckpt queued behind the first: its own local file
    gated.gate.set()
    writer.flush()
    assert gated.order == ["ckpt-00000002-0.ckpt", "ckpt-00000004-0.ckpt", BEST, "ckpt-00000004-1.ckpt",
                           "ckpt-00000006-0.ckpt", "ckpt-00000008-0.ckpt", BEST]
    assert gated.most == 1, "two copies ran at once"
    assert [p.name for p in resumable(folder)] == ["ckpt-00000006-0.ckpt", "ckpt-00000008-0.ckpt"]
    assert load_checkpoint(folder / BEST)["step"] == 8
    assert sorted(p.name for p in folder.iterdir()) == [BEST, "ckpt-00000006-0.ckpt", "ckpt-00000008-0.ckpt"]


def test_a_save_waits_only_when_max_pending_copies_are_queued(tmp_path, gated, monkeypatch):
    monkeypatch.setattr(C, "MAX_PENDING", 2)
    writer, trainer = RunCheckpoints(tmp_path / "ckpt", 2, 2, "val_auc"), StateTrainer()
    _save_at(writer, trainer, 2)
    _save_at(writer, trainer, 4)
    threading.Timer(0.5, gated.gate.set).start()
    assert _save_at(writer, trainer, 6) >= 0.4  # the third waited for the oldest copy
    writer.flush()
    assert [p.name for p in resumable(tmp_path / "ckpt")] == ["ckpt-00000004-0.ckpt", "ckpt-00000006-0.ckpt"]


def test_a_failed_copy_is_the_usual_one_line_error_at_the_next_save_or_flush(tmp_path, monkeypatch):
    import shutil

    def short_copy(src, dst, length=0):  # a full Drive: the copy stops early without an error
        dst.write(src.read()[:100])

    folder = tmp_path / "ckpt"
    writer, trainer = RunCheckpoints(folder, 2, 2, "val_auc"), StateTrainer()
    _save_at(writer, trainer, 2)
    writer.flush()
    monkeypatch.setattr(shutil, "copyfileobj", short_copy)
    _save_at(writer, trainer, 4)  # handed off: its copy fails in the background
    message = (r"^\S+ckpt-00000004-0.ckpt: copy is 100 bytes, expected \d+; disk full\? "
               r"\(the previous checkpoints are untouched: free space and re-run\)$")
    with pytest.raises(OSError, match=message):
        for _ in range(100):  # the next save (the copy may still run at the first)
            _save_at(writer, trainer, 6)
            time.sleep(0.05)
    monkeypatch.undo()
    assert [p.name for p in resumable(folder)] == ["ckpt-00000002-0.ckpt"]  # nothing partial
    writer.on_exception(None, None, OSError())  # what Lightning does next: the fit ends
    flushed = RunCheckpoints(tmp_path / "other", 2, 2, "val_auc")
    monkeypatch.setattr(shutil, "copyfileobj", short_copy)
    _save_at(flushed, trainer, 2)
    with pytest.raises(OSError, match=r"copy is 100 bytes.*free space and re-run\)$"):
        flushed.on_fit_end(trainer, None)  # the end of the fit waits for its copies and raises their error
    assert flushed._publisher is None and flushed._local is None


def test_save_step_and_an_exception_leave_the_checkpoints_published(tmp_path, monkeypatch):
    original = C.atomic_copy

    def slow_copy(src, dest):
        time.sleep(0.3)
        original(src, dest)

    monkeypatch.setattr(C, "atomic_copy", slow_copy)
    writer, trainer = RunCheckpoints(tmp_path / "ckpt", 10, 2, "val_auc"), StateTrainer()
    trainer.global_step = 3
    path = writer.save_step(trainer)  # the budget's pause: returns once the checkpoint is complete
    assert path.name == "ckpt-00000003-0.ckpt" and load_checkpoint(path)["step"] == 3
    _save_at(writer, trainer, 10)
    writer.on_exception(trainer, None, KeyboardInterrupt())  # the pending copy is finished before the fit ends
    assert [p.name for p in resumable(tmp_path / "ckpt")] == ["ckpt-00000003-0.ckpt", "ckpt-00000010-0.ckpt"]


CHILD = """
import shutil, sys, time
from pathlib import Path
import torch
from kitpkg.train.checkpoint import RunCheckpoints

class T:
    is_global_zero, global_step = True, 0
    def save_checkpoint(self, path, weights_only=False):
        torch.save({"w": torch.zeros(300_000), "step": self.global_step}, path)

writer, trainer = RunCheckpoints(Path(sys.argv[1]), 2, 2, "val_auc"), T()
trainer.global_step = 2
writer._save(trainer, "ckpt-00000002-0.ckpt")
writer.flush()

def stalled(src, dst, length=0):  # Drive hangs halfway through the copy; then the session is killed
    dst.write(src.read()[: 600_000])
    dst.flush()
    print("halfway", flush=True)
    time.sleep(600)

shutil.copyfileobj = stalled
trainer.global_step = 4
writer._save(trainer, "ckpt-00000004-0.ckpt")
time.sleep(600)  # training goes on
"""


def test_a_kill_mid_copy_leaves_the_previous_checkpoint_and_no_resumable_partial(tmp_path):
    folder = tmp_path / "ckpt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        assert child.stdout.readline().strip() == "halfway"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
    partial = list(folder.glob(".ckpt-00000004-0.ckpt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size == 600_000
    assert [p.name for p in resumable(folder)] == ["ckpt-00000002-0.ckpt"]
    assert load_checkpoint(latest_intact(folder))["step"] == 2
    # the fold trains again: the leftover partial copy goes, the checkpoints stay
    RunCheckpoints(folder, 2, 2, "val_auc").on_fit_start(StateTrainer(), None)
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-00000002-0.ckpt"]
