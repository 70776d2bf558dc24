"""Where a fold's time goes: figures recorded in folds/fold{k}.json and shown by `kitpkg runs`.

  wall_s        seconds of the fit plus the OOF/test predictions, in the process that ran them (a fold resumed after
                a crash counts from the resume)
  train_img_s   training images per second: images / time in training steps (loading the next batch and the
                mid-epoch checkpoint writes included, validation and prediction excluded), all ranks together
  loader_wait   share of that training time spent waiting for the next batch (0 = the loader keeps up, the model is
                the bottleneck; near 1 = the model waits on the loader)
  loader_img_s  images per second the fold's training loader delivers alone, without the model: one more epoch of
                it after the fit, timed over a few batches after its first (worker start-up excluded)
  device        e.g. "T4 (sm 7.5)" or "CPU" (prefixed "2×" under DDP), with `precision` (e.g. "16-mixed +
                channels_last")
When loader_img_s is close to train_img_s and loader_wait is high, more workers (or smaller images) speed the run up;
when loader_img_s is far above train_img_s, the GPU (model, precision, batch size) sets the pace.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

import pytorch_lightning as pl

from .trainer import DeviceChoice

LOADER_BATCHES = 8  # batches timed by loader_rate after the first one
LOADER_SECONDS = 20.0  # ... or fewer, when they take longer than this


class Throughput(pl.Callback):
    """Counts training images, time in training steps and time waiting for batches (this rank).

    Put it last among the callbacks and its `arrival` first: a step's interval then ends after the other callbacks'
    work (checkpoints), and waiting is only the time from one step's end to the next batch's arrival, before the
    batch stages (GPU augmentation, mixing) work on it."""

    def __init__(self) -> None:
        self.images, self.train_s, self.wait_s = 0, 0.0, 0.0
        self._mark: Optional[float] = None
        self.arrival = _Arrival(self)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()

    def arrived(self) -> None:
        """A training batch arrived: the wait since the last step's end ends here."""
        if self._mark is not None:
            self.wait_s += time.perf_counter() - self._mark

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.train_s += now - self._mark
        self.images += len(batch["id"])
        self._mark = now

    def figures(self, world_size: int = 1) -> Dict[str, float]:
        """train_img_s (all ranks: this rank's rate × world size) and loader_wait; empty when nothing trained."""
        if not self.images or self.train_s <= 0:
            return {}
        return {"train_img_s": round(self.images * world_size / self.train_s, 2),
                "loader_wait": round(self.wait_s / self.train_s, 4)}


class _Arrival(pl.Callback):
    """Throughput's first half: marks a batch's arrival (put first among the callbacks)."""

    def __init__(self, throughput: Throughput):
        self.throughput = throughput

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.throughput.arrived()


def loader_rate(loader: Any, batches: int = LOADER_BATCHES, seconds: float = LOADER_SECONDS) -> Optional[float]:
    """Images/s of `loader` alone, timed over up to `batches` batches after its first; None when it has too few."""
    iterator = iter(loader)
    try:
        next(iterator)  # worker start-up and the first shard's open are not the steady rate
    except StopIteration:
        return None
    images, start = 0, time.perf_counter()
    for i, batch in enumerate(iterator):
        images += len(batch["id"])
        if i + 1 >= batches or time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    del iterator
    return round(images / elapsed, 2) if images and elapsed > 0 else None


def device_fields(choice: DeviceChoice, world_size: int = 1) -> Dict[str, str]:
    """{"device": "T4 (sm 7.5)" or "CPU" ("N×" prefixed under DDP), "precision": Lightning's + channels_last} of the
    fold's device choice (its recipe's)."""
    name = choice.reason.split(":", 1)[0]
    return {"device": f"{world_size}× {name}" if world_size > 1 else name, "precision": choice.recipe}
