"""A diverged fold is a failed fold: a non-finite training loss, weight or validation prediction stops it.

Looking at every step's loss from the host would cost a device sync per step (what `float(loss)` did), so each step
only folds `isfinite(loss)` into a few device tensors: where the first non-finite loss came (epoch, batch, update)
and whether its batch's metadata was non-finite. Those are read (one sync) only where a result would be written:
  - before every checkpoint (on_save_checkpoint, so a checkpoint after a non-finite step, or holding non-finite
    weights, is never written: the fold's newest checkpoint is its last good one, which a resume starts from);
  - after every validation, before metrics.csv, early stopping or the best checkpoint see it (val_loss is finite for
    any finite logits, so a non-finite one means non-finite predictions).
A divergence is caught at the next of these, at most train.checkpoint_every_n_steps updates late (wasted work, never
a wrong result); the KitError names the fold, where it began and the likely cause. The fold's status stays
"running": it is never recorded as done. Under DDP the verdict is reduced over the ranks at each of these points
(every rank calls them), so all ranks stop together.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch

from ..errors import KitError


class DivergenceGuard(pl.Callback):
    """Stops fold `fold`'s fit with a KitError at the first checkpoint or validation after a non-finite loss,
    weight or validation prediction. Put it first among the callbacks (before early stopping and the writer)."""

    def __init__(self, fold: int, lr: Optional[float] = None):
        self.fold, self.lr = fold, lr
        self._first: Optional[torch.Tensor] = None  # [epoch, batch, update] of the first non-finite loss, else -1s
        self._bad_input: Optional[torch.Tensor] = None  # that batch's metadata held a non-finite value

    # -- every step: device tensors only (no sync) --------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        if self._first is None:
            self._first = torch.full((3,), -1, dtype=torch.long, device=loss.device)
            self._bad_input = torch.zeros((), dtype=torch.bool, device=loss.device)
        new = (self._first[0] < 0) & ~torch.isfinite(loss).all()
        where = torch.empty_like(self._first)  # filled from host scalars: kernel arguments, not a copy
        where[0], where[1], where[2] = trainer.current_epoch, batch_idx, trainer.global_step
        self._first = torch.where(new, where, self._first)
        meta = batch.get("meta") if isinstance(batch, dict) else None
        if isinstance(meta, torch.Tensor):
            self._bad_input = self._bad_input | (new & ~torch.isfinite(meta).all().to(loss.device))

    # -- where results are written: one sync each ---------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        self.check(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.check(trainer, pl_module)
        val_loss = trainer.callback_metrics.get("val_loss")  # logged with sync_dist: the same on every rank
        if val_loss is not None and not math.isfinite(float(val_loss)):
            raise KitError(f"fold {self.fold}: the validation predictions of epoch {trainer.current_epoch} are "
                           f"not finite (val_loss {float(val_loss)}) while training stayed finite: a validation "
                           f"sample's input is non-finite (a model.meta column holding inf?); the fold is not done")

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise the divergence KitError when a non-finite loss was seen (on any rank) or a weight is non-finite."""
        device = pl_module.device
        first = self._first if self._first is not None else torch.full((3,), -1, dtype=torch.long, device=device)
        bad_input = self._bad_input if self._bad_input is not None else torch.zeros((), dtype=torch.bool,
                                                                                    device=device)
        flags = torch.stack([(first[0] >= 0), bad_input.to(device), ~_weights_finite(pl_module)]).to(device).float()
        flags = trainer.strategy.reduce(flags, reduce_op="max") if trainer.world_size > 1 else flags
        loss_bad, input_bad, weights_bad = (bool(f) for f in flags.tolist())
        if not (loss_bad or weights_bad):
            return
        epoch, batch, update = first.tolist()
        what = (f"the loss became non-finite at epoch {epoch}, batch {batch} (update {update})" if epoch >= 0 else
                "the loss became non-finite on another rank" if loss_bad else
                f"the weights became non-finite by update {trainer.global_step}")
        raise KitError(f"fold {self.fold}: training diverged: {what}; {self._cause(input_bad)}; the fold is not done "
                       f"and its newest checkpoint is the last good one")

    def _cause(self, input_bad: bool) -> str:
        if input_bad:
            return "that batch's metadata holds a non-finite value: check the model.meta columns (an inf in the CSV?)"
        lr = f" (now {self.lr:g})" if self.lr is not None else ""
        return f"likely the learning rate: lower optim.lr{lr}, or add sched.warmup_epochs or train.grad_clip"


def _weights_finite(module: torch.nn.Module) -> torch.Tensor:
    """A device bool: every floating-point parameter and buffer of `module` is finite (one reduction each, no sync)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()
