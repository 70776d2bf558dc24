"""A fold killed right after each kind of checkpoint (a step's, an epoch's end, best.ckpt), before it is recorded as
trained, and during its OOF and test predictions, then re-run: every optimizer step sees the batch ids and learning
rate of an uninterrupted run, and the fold's OOF and test predictions are the same bytes.

One fold's life is killed at each point in turn (a chain of re-runs on one run directory), so the whole test costs
about one fold's training plus a restart per kill. The kill is killhook/kill_at.py's KillAt with the SIGKILL
replaced by an exception, so the run stays in this process; it fires right after the checkpoint file is published,
where a real crash leaves the same files (test_cv_resume.py kills a real subprocess)."""
from __future__ import annotations

import pytest

pl = pytest.importorskip("pytorch_lightning")

from killhook.kill_at import kill_callbacks  # noqa: E402
from kitpkg.config import load_config  # noqa: E402
from kitpkg.train import cv  # noqa: E402
from kitpkg.train.runstate import RunState  # noqa: E402

FOLD = 1
BUILD_TRAINER = cv.build_trainer
CONFIG = """\
data: {{shards: {shards}, image_size: 64, batch_size: 8, num_workers: 0}}
model: {{name: test_resnet, pretrained: false}}
optim: {{name: adamw, lr: 0.003}}
sched: {{name: cosine, warmup_epochs: 0, per_update: false}}
train: {{epochs: 2, seed: 1, deterministic: true, checkpoint_every_n_steps: 2, keep_checkpoints: 2}}
"""


class Killed(BaseException):
    """Stands for the SIGKILL (a BaseException, so no `except Exception` on the way swallows it)."""


def _crash():
    raise Killed()


class StepLog(pl.Callback):
    """Appends (global step, epoch, batch ids, learning rate) of every optimizer step to `steps`."""

    def __init__(self, steps):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.steps.append((trainer.global_step, trainer.current_epoch, tuple(batch["id"]), lr))


def _run_fold(monkeypatch, config, run_dir, kill_at=""):
    """Run (or resume) fold FOLD in this process with the step log; killed at `kill_at` -> (steps, killed?)."""
    steps = []
    spec = f"{FOLD}:{kill_at}" if kill_at else ""

    def build_trainer(recipe, callbacks=(), **kw):
        return BUILD_TRAINER(recipe, kill_callbacks([StepLog(steps), *callbacks], spec, recipe.fold, _crash), **kw)

    monkeypatch.setattr(cv, "build_trainer", build_trainer)
    try:
        cv.run_cv(config, run_dir, folds=[FOLD], train_only=True)
    except Killed:
        return steps, True
    return steps, False


@pytest.fixture(scope="module")
def kill_config(tmp_path_factory, tfrecord_manifest):
    path = tmp_path_factory.mktemp("resume_kinds") / "kinds.yaml"
    path.write_text(CONFIG.format(shards=tfrecord_manifest.root))
    return load_config(path)


@pytest.fixture(scope="module")
def reference(kill_config, tmp_path_factory):
    """(steps, run dir) of the fold trained without a kill."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_dir = tmp_path_factory.mktemp("resume_kinds_reference")
        steps, killed = _run_fold(monkeypatch, kill_config, run_dir)
    assert not killed
    return steps, run_dir


def test_a_fold_killed_after_every_kind_of_checkpoint_resumes_exactly(kill_config, reference, tmp_path, monkeypatch):
    ref_steps, ref_dir = reference
    per_epoch = sum(1 for s in ref_steps if s[1] == 0)
    assert len(ref_steps) == 2 * per_epoch and per_epoch % 2 == 0, "a step checkpoint is due at each epoch's end"
    assert ref_steps[0][3] != ref_steps[-1][3], "the epoch-interval schedule changed the learning rate"
    run_dir, seen = tmp_path / "run", {}
    chain = ["step-ckpt:2",  # mid-epoch 0
             "best:0",  # before epoch 0's end-of-epoch checkpoint: its validation must run again
             "epoch-ckpt:0",  # resumed after the epoch's validation (the restore Lightning treats as mid-epoch)
             f"step-ckpt:{per_epoch + 2}",  # mid-epoch 1
             "epoch-ckpt:1",  # the last epoch's end
             "before-trained", "predict-oof", "predict-test", ""]  # "": the run that finishes the fold
    for kill_at in chain:
        steps, killed = _run_fold(monkeypatch, kill_config, run_dir, kill_at)
        assert killed == bool(kill_at), kill_at
        for step in steps:
            assert step == ref_steps[step[0] - 1], f"after a kill at {kill_at or 'the end'}: step {step[0]} differs"
        seen.update({s[0]: s for s in steps})
        status = RunState.read(run_dir).fold(FOLD).status
        assert status == ("trained" if kill_at.startswith("predict") else "done" if not kill_at else "running")
    assert sorted(seen) == [s[0] for s in ref_steps], "every step was trained"
    for name in (f"oof_fold{FOLD}.csv", f"test_fold{FOLD}.csv", f"fold{FOLD}/metrics.csv"):
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
