"""One line per validation when there is no progress bar (`--parallel-folds` workers, KITPKG_NO_PROGRESS): what a
notebook cell shows of folds that train in other processes."""
from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl


class EpochLines(pl.Callback):
    """Prints `fold k epoch e/E: val_auc 0.8123 val_loss 0.41 train_loss 0.45 (35 s)` after each validation."""

    def __init__(self, fold: Optional[int]) -> None:
        self.fold = fold
        self._started: Optional[float] = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return  # trainer.validate() (kitpkg plan's timing) is no epoch
        figures = [f"{k} {float(v):.4f}" for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val_")]
        loss = pl_module.train_loss_epoch() if hasattr(pl_module, "train_loss_epoch") else None
        if loss is not None:
            figures.append(f"train_loss {loss:.4f}")
        took = f" ({time.perf_counter() - self._started:.0f} s)" if self._started is not None else ""
        where = "" if self.fold is None else f"fold {self.fold} "
        print(f"{where}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {' '.join(figures)}{took}", flush=True)
