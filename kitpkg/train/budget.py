"""A session budget: a run that would outlive its session pauses in good order before the end, and continues later.

Free sessions end: Kaggle's about 12 h after they start (9 h on a TPU), a run cut there keeps nothing it had not
published. `train.time_limit` (config.py parses it) says how long after the session's start the run must be paused;
null/auto takes the platform's default (kitpkg/env.py: Kaggle's session less a margin; none on Colab or locally).
The pause (`SessionBudget`) happens at an optimizer step: a complete resumable checkpoint, the fold left "running",
later folds not started; the run writes what is finished, prints how to continue and exits 0, so a Kaggle "Save
Version" keeps its output, which a later session attaches as input (kitpkg/notebook/restore.py continues from it).
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pytorch_lightning as pl

from .. import env
from ..config import Config

output_limit_bytes = env.output_limit_bytes  # the run directory's ceiling on this platform (None: none known)


def session_limit_s(config: Config, environ: Mapping[str, str] = os.environ, now: Optional[float] = None,
                    proc: Path = Path("/proc")) -> Optional[float]:
    """Seconds left for this run before it must pause (train.time_limit, else the platform's default, counted from
    the session's start where the platform has one, else from `now`); None: no limit."""
    now = time.time() if now is None else now
    platform = env.detect_platform(environ)
    limit = config.train.time_limit
    if limit is None:  # auto: the platform's session, less the time the pause itself needs
        length = env.session_length_s(platform, environ)
        limit = None if length is None else length - env.KAGGLE_MARGIN_S
    if not limit:  # off (0), or no default on this platform
        return None
    start = env.session_start(platform, now, environ, proc)
    return max(0.0, limit - (now - start if start is not None else 0.0))


def run_deadline(config: Config, environ: Mapping[str, str] = os.environ) -> Optional[float]:
    """The time.monotonic() reading by which this run must have paused (None: no limit); read once as it starts."""
    left = session_limit_s(config, environ)
    return None if left is None else time.monotonic() + left


def time_is_up(deadline: Optional[float]) -> bool:
    """True when `deadline` (run_deadline's) has passed, as rank 0 sees it once processes train together: a fold
    not yet started is then not begun."""
    if deadline is None:  # no budget: the same on every rank (one config, one machine), nothing to agree on
        return False
    up = time.monotonic() >= deadline
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # DDP: every rank skips the fold, or none does
        flag = [up]
        dist.broadcast_object_list(flag, src=0)
        up = bool(flag[0])
    return up


def keep_prediction_weights(folder: Path) -> None:
    """Delete a finished fold's resumable checkpoints, which predicting never reads (foldcheck's rule: best.ckpt,
    or without one the newest intact checkpoint): what a run directory holds per fold stays one checkpoint."""
    from .checkpoint import BEST, latest_intact, resumable

    keep = folder / BEST if (folder / BEST).exists() else latest_intact(folder)
    for path in resumable(folder):
        if path != keep:
            path.unlink(missing_ok=True)


def continue_hint(command: Optional[str] = None, environ: Mapping[str, str] = os.environ) -> str:
    """How to continue a paused run: `command` (the CLI's), else the notebook's cell; on Kaggle in a new session
    with this run's output attached (kitpkg/notebook/restore.py copies it back)."""
    step = f"`{command}`" if command else "run the notebook's cells again (`result = kitpkg.run_cv(config)`)"
    if env.detect_platform(environ) != "kaggle":
        return step
    return (f"{step} in a new session with this output attached as input (Save Version, then Add Input -> Your "
            f"Work -> this version): the run continues from its copy")


class SessionBudget(pl.Callback):
    """Pauses the fit before `deadline` (a time.monotonic() reading) at an optimizer step: `writer` publishes a
    complete resumable checkpoint, then the trainer stops; `paused` says it did.

    It pauses at the last chance that leaves time for the run to reach the next one and still pause there: the
    next optimizer step (at its slowest lately, which includes a periodic save) and the pause's own checkpoint;
    where the epoch ends with that step, its validation and the writer's checkpoint after it instead (no pause at
    an epoch's last batch: Lightning resumes such a checkpoint as a finished epoch and never runs its validation).
    Rank 0 decides, every rank follows (a broadcast), so the collective save and the stop are the same everywhere.
    Put it right after `writer`."""

    def __init__(self, deadline: float, writer: Any, clock: Callable[[], float] = time.monotonic):
        self.deadline, self.writer, self.clock = deadline, writer, clock
        self.paused = False
        self._steps: deque = deque(maxlen=max(20, writer.every_n_steps + 1))  # seconds per recent optimizer step
        self._val_s: Optional[float] = None
        self._last_step, self._last_t, self._val_start = -1, None, None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, now = trainer.global_step, self.clock()
        if step == self._last_step:
            return  # gradients still accumulating: no complete state to save
        if self._last_t is not None:
            self._steps.append(now - self._last_t)
        self._last_step, self._last_t = step, now
        ends_epoch = batch_idx + 1 >= trainer.num_training_batches
        if not ends_epoch and self._decide(trainer, now + self._next_chance_s(trainer, batch_idx)):
            self.writer.save_step(trainer)
            self._stop(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = None if trainer.sanity_checking else self.clock()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is None:
            return
        now = self.clock()
        self._val_s = now - self._val_start  # the writer's hook ran before: its checkpoints are included
        if self._last_t is not None:
            self._last_t += self._val_s  # a step's time leaves the validation out
        # the writer just saved this step's after-validation checkpoint (published in the background, waited for
        # by the fit's end): a pause here needs no save; a fit that ends anyway (its last epoch, early stopping) is
        # not paused
        ending = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if not ending and self._decide(trainer, now + 2 * self._step_s()):
            self._stop(trainer)

    def _step_s(self) -> float:
        return max(self._steps, default=0.0)

    def _next_chance_s(self, trainer: pl.Trainer, batch_idx: int) -> float:
        """Seconds from now until the pause would be over if it waited for its next chance (see the class doc)."""
        step = self._step_s()
        batches = trainer.accumulate_grad_batches
        if batch_idx + 1 + batches < trainer.num_training_batches:
            return 2 * step  # the next step, then the pause's save
        val = self._val_s
        if val is None:  # not timed yet: a forward pass of a batch is about a third of a training step's time
            val = sum(trainer.num_val_batches) * step / max(1, batches) / 2
        return 2 * step + val  # the last step, its validation, then its after-validation save

    def _decide(self, trainer: pl.Trainer, done_by: float) -> bool:
        """True on every rank when rank 0 finds `done_by` past the deadline."""
        return bool(trainer.strategy.broadcast(done_by >= self.deadline, src=0))

    def _stop(self, trainer: pl.Trainer) -> None:
        self.paused = True
        trainer.should_stop = True
        # Lightning validates right away when told to stop mid-epoch: a partial epoch's score would be recorded
        # (metrics.csv, best.ckpt) and the resumed run would differ from an uninterrupted one
        trainer.limit_val_batches = 0
