"""Crash-safe checkpoints: full Lightning state written locally, then published atomically into the run directory.

The run directory may sit on Google Drive, where Lightning's own save is a non-atomic cross-filesystem move (Lightning
#21253, #20270). So every checkpoint is saved to a local temp folder first, then copied beside its destination under a
temp name, size-checked, fsynced and `os.replace`d. Resumable checkpoints are named `ckpt-<global step>-<n>.ckpt`
(n = 0 mid-epoch, 1 after validation) so their names sort in the order they were written; the newest intact one is
resumed; a truncated one (Drive sync, full disk), detected by its zip CRCs, and one that `weights_only` loading
refuses (foreign or crafted) are skipped with a warning -- neither is ever unpickled.

The copy to slow storage runs off the training thread. The local save stays on it (under DDP it is a collective every
rank joins, and it takes a point-in-time copy of the state: the next optimizer step may change the weights). Rank 0
then hands the finished local file to one background thread of ours, which publishes the checkpoints one at a time in
the order they were written (so two copies of one file never race, and `best.ckpt` is replaced in order), prunes the
old resumable ones only after the newer one is complete, and deletes the local file. A save while copies are still
pending goes on without waiting unless MAX_PENDING are (a copy slower than the checkpoint interval): then it waits for
the oldest, which bounds the local disk used and how far the run directory lags. `flush()` waits for all of them (the
end of the fit, before best.ckpt is read for predictions; the session budget's pause); a copy's error (a full Drive)
is raised on the training thread at the next save or flush, with the same message; after any other exception the
pending copies are finished, so a re-run resumes from the newest checkpoint written. A kill at any moment leaves the
newest published checkpoint: a copy in flight has a temp name that never matches the resumable pattern (and is
removed when the fold trains again).

Lightning's AsyncCheckpointIO was considered: it runs the whole torch.save in a thread, after cloning every tensor
of the state on its device (a second copy of B4's weights, optimizer moments and EMA in GPU memory per pending save,
with no bound on how many), and its file is then the one kitpkg would still have to publish -- the slow part, which
it does not cover. The local save is the fast part (benchmarks/checkpoint.py), so the thread here moves only the copy.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
import zipfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Set

import pytorch_lightning as pl

from ..errors import KitError
from ..fsutil import atomic_copy, atomic_write_text, temp_pattern
from ..rundir import BEST, RESUMABLE, ckpt_name, metrics_beside

MAX_PENDING = 3  # checkpoints handed off and not yet published; a save beyond that waits for the oldest


def publish(local: Path, dest: Path) -> None:
    """Copy a finished local checkpoint into the run directory atomically (temp name, size check, fsync, rename)."""
    try:
        atomic_copy(local, dest)
    except OSError as err:
        raise OSError(f"{err} (the previous checkpoints are untouched: free space and re-run)") from None


def is_intact(path: Path) -> bool:
    """True when the file is a complete torch zip archive (every member passes its CRC check) that loads with
    `weights_only=True` -- a foreign or crafted pickle is refused by the safe loader, never run."""
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.testzip() is not None:
                return False
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
    try:
        _safe_load(path, mmap=True)  # mmap: only the pickle is read, tensor data stays on disk
    except Exception:  # noqa: BLE001 - any refusal (UnpicklingError, RuntimeError, ...) means "cannot be resumed"
        return False
    return True


def _safe_load(path: Path, mmap: bool = False) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


_warned: Set[str] = set()


def warn_skipped(path: Path, fallback: str) -> None:
    """Warn once per file and process that `path` cannot be used and what is used instead."""
    if str(path) in _warned:
        return
    _warned.add(str(path))
    warnings.warn(f"kitpkg: {path} is truncated or damaged, or holds objects the safe loader refuses (not "
                  f"unpickled); {fallback}", RuntimeWarning, stacklevel=3)


def resumable(folder: Path) -> List[Path]:
    """Resumable checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if RESUMABLE.match(p.name))


def latest_intact(folder: Path) -> Optional[Path]:
    """The newest resumable checkpoint that is intact and safely loadable (newer ones are reported once and skipped)."""
    for path in reversed(resumable(folder)):
        if is_intact(path):
            return path
        warn_skipped(path, "resuming from the checkpoint before it")
    return None


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint kitpkg wrote, with torch.load(weights_only=True): tensors and plain containers only.

    A file the safe loader refuses is a KitError naming it (never a traceback, never unpickled)."""
    import pickle

    try:
        return _safe_load(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise KitError(f"{path}: not a checkpoint kitpkg can load safely ({str(err).splitlines()[0][:160]}); "
                       f"delete it and re-run") from None


class RunCheckpoints(pl.Callback):
    """Saves full-state checkpoints every N optimizer steps and after each validation; keeps the best by `monitor`.

    Its state (best score, per-epoch history) lives in every checkpoint, so a resumed fold continues the same record.
    """

    def __init__(self, folder: Path, every_n_steps: int, keep: int, monitor: str, mode: str = "max"):
        self.folder, self.every_n_steps, self.keep = Path(folder), int(every_n_steps), max(2, int(keep))
        self.monitor, self.mode = monitor, mode
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        self._last_step = -1
        self._local: Optional[str] = None
        self._seq = 0  # numbers the local files: a queued best.ckpt is never overwritten by the next one
        self._publisher: Optional[ThreadPoolExecutor] = None  # made at the first save: a spawned rank pickles None
        self._pending: Deque[Future] = deque()

    # -- state carried inside the checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "history": self.history}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.history = list(state.get("history", []))

    # -- hooks --------------------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        # only right after an optimizer step: accumulated gradients are not part of a checkpoint
        due = step != self._last_step and step % self.every_n_steps == 0 and step > 0
        if due and not _validation_follows(trainer, batch_idx):
            self._save(trainer, ckpt_name(step, after_validation=False))
        self._last_step = step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "lr": pl_module.current_lr(),
               "train_loss": pl_module.train_loss_epoch(), **metrics}
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        score = metrics.get(self.monitor)
        improved = score is not None and score == score and (
            self.best is None or (score > self.best if self.mode == "max" else score < self.best))
        if improved:
            self.best, self.best_epoch = score, trainer.current_epoch
        if trainer.is_global_zero:
            self._write_history()
        # no finite score yet and NaN now (an AUC of a validation split of one class): the newest weights stand as
        # best, so such a fold predicts from best.ckpt like any other, with its last epoch's weights
        if improved or (score is not None and score != score and self.best is None):
            self._save(trainer, BEST, prune=False)
        self._save(trainer, ckpt_name(trainer.global_step, after_validation=True))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.folder.is_dir():  # copies a kill cut short: never resumable, only space
            for stale in self.folder.glob(temp_pattern("*.ckpt")):
                stale.unlink(missing_ok=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self.flush()
        finally:
            self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # finish the pending copies (their errors are secondary to this exception): a re-run resumes from the newest
        while self._pending:
            self._pending.popleft().exception()
        self._close()

    def flush(self) -> None:
        """Wait until every checkpoint handed off is published; a copy's error is raised here."""
        while self._pending:
            self._pending.popleft().result()

    def save_step(self, trainer: pl.Trainer) -> Path:
        """Write a resumable checkpoint of the current optimizer step now and return its path once it is published
        (the session budget's pause, kitpkg/train/budget.py: after this writer's own batch-end hook, at a step no
        validation follows). Every rank calls it (a collective save)."""
        step = trainer.global_step
        name = ckpt_name(step, after_validation=False)
        # the periodic save of this very step is not written twice; decided from the step alone, the same on every
        # rank (a look at the folder could differ between ranks while rank 0 publishes, and hang the collective)
        if not (step > 0 and step % self.every_n_steps == 0):
            self._save(trainer, name)
        self.flush()
        self._last_step = trainer.global_step
        return self.folder / name

    # -- writing ------------------------------------------------------------------------------------------------------
    def _save(self, trainer: pl.Trainer, name: str, prune: bool = True) -> None:
        self._reap()  # a copy that failed since the last save stops the fit now, as a synchronous copy would have
        if self._local is None:
            self._local = tempfile.mkdtemp(prefix="kitpkg-ckpt-")
        self._seq += 1
        local = Path(self._local) / f"{self._seq:06d}-{name}"
        trainer.save_checkpoint(local, weights_only=False)  # every rank calls it (collective); rank 0 writes
        if trainer.is_global_zero:
            while len(self._pending) >= MAX_PENDING:
                self._pending.popleft().result()
            if self._publisher is None:
                self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kitpkg-publish")
            self._pending.append(self._publisher.submit(self._publish, local, name, prune))

    def _publish(self, local: Path, name: str, prune: bool) -> None:
        """(the background thread) Publish one checkpoint, then prune the resumable ones it makes old."""
        try:
            publish(local, self.folder / name)
        finally:
            local.unlink(missing_ok=True)
        if prune:
            for old in resumable(self.folder)[:-self.keep]:
                old.unlink(missing_ok=True)

    def _reap(self) -> None:
        """Forget the copies that are done; raise the first one's error."""
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    def _close(self) -> None:
        if self._publisher is not None:
            self._publisher.shutdown(wait=True)
            self._publisher = None
        if self._local:
            shutil.rmtree(self._local, ignore_errors=True)
            self._local = None

    def _write_history(self) -> None:
        import csv
        import io

        keys = list(dict.fromkeys(k for row in self.history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(metrics_beside(self.folder), buf.getvalue())


def _validation_follows(trainer: pl.Trainer, batch_idx: int) -> bool:
    """True after the epoch's last batch when the epoch's validation (and its end-of-epoch checkpoint) comes next.

    Lightning resumes a checkpoint written after an epoch's last batch as a finished epoch and never runs that epoch's
    validation: no history row, no best.ckpt from it, one validation fewer for early stopping. So none is written
    there; a crash before the end-of-epoch checkpoint resumes from the step checkpoint before."""
    every = trainer.check_val_every_n_epoch
    return batch_idx + 1 >= trainer.num_training_batches and sum(trainer.num_val_batches) > 0 \
        and every is not None and (trainer.current_epoch + 1) % every == 0


def best_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """best.ckpt, else (no validation metric was ever finite, or best.ckpt is damaged or refused by the safe loader)
    the newest intact checkpoint; None when there is none."""
    best = ckpt_dir / BEST
    if best.exists():
        if is_intact(best):
            return best
        warn_skipped(best, "using the fold's newest intact checkpoint instead")
    return latest_intact(ckpt_dir)
