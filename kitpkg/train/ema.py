"""`train.ema`: an exponential moving average of the trained weights (timm's `ModelEmaV3`).

The average covers every trainable child of the KitModule (the timm model and any branch beside it) under the
module's own state_dict names, so checkpoints hold it as plain tensors (`kitpkg_ema`, `weights_only` loading) and
`prediction_state` turns a checkpoint into the weights to predict with. The `EmaAverage` callback drives it in
training: an update after every optimizer step, the averaged weights swapped in for validation (and back after), so
the validation score -- which picks the best checkpoint -- is the EMA's.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import pytorch_lightning as pl
import torch

from ..config import EmaConfig

CKPT_KEY = "kitpkg_ema"


def trainable_children(module: torch.nn.Module) -> torch.nn.ModuleDict:
    """The module's children that hold trainable parameters, by name (what the EMA averages)."""
    return torch.nn.ModuleDict({name: child for name, child in module.named_children()
                                if any(p.requires_grad for p in child.parameters())})


class KitEma:
    """ModelEmaV3 over `trainable_children(module)`, built once the module is on its device."""

    def __init__(self, cfg: EmaConfig):
        self.cfg = cfg
        self.ema: Any = None
        self._pending: Optional[Dict[str, torch.Tensor]] = None
        self._swapped = False

    def start(self, module: torch.nn.Module) -> None:
        """Create the average from the current weights (or the checkpoint's, after a resume) on the module's device."""
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(trainable_children(module), decay=self.cfg.decay, use_warmup=self.cfg.warmup)
        if self._pending is not None:
            self.ema.module.load_state_dict(self._pending)
            self._pending = None

    def update(self, module: torch.nn.Module, step: int) -> None:
        """One EMA step after an optimizer update (`step`: updates so far; drives timm's warmup)."""
        if self.ema is None:
            self.start(module)
        self.ema.update(trainable_children(module), step=step)

    def swap(self, module: torch.nn.Module) -> None:
        """Exchange the live weights and the averaged ones in place (twice = back); no copy."""
        if self.ema is None:
            return
        live = trainable_children(module).state_dict(keep_vars=True)
        for name, avg in self.ema.module.state_dict(keep_vars=True).items():
            tensor = live[name]
            tensor.data, avg.data = avg.data, tensor.data
        self._swapped = not self._swapped

    def state(self) -> Optional[Dict[str, torch.Tensor]]:
        """The averaged weights under the module's state_dict names (CPU tensors), for a checkpoint."""
        if self.ema is None:
            return self._pending
        return {k: v.detach().cpu().clone() for k, v in self.ema.module.state_dict().items()}

    def load(self, state: Optional[Mapping[str, torch.Tensor]]) -> None:
        """Restore the average from a checkpoint (applied at `start` when the module is not on its device yet)."""
        if state is None:
            return
        if self.ema is None:
            self._pending = dict(state)
        else:
            self.ema.module.load_state_dict(dict(state))


def prediction_state(checkpoint: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The state_dict to predict with: the checkpoint's weights with the EMA's in their place when it holds one."""
    return {**checkpoint["state_dict"], **(checkpoint.get(CKPT_KEY) or {})}


class EmaAverage(pl.Callback):
    """train.ema as a callback (the shape of Lightning's `WeightAveraging`): the average is updated after every
    optimizer step, swapped in for validation (so the score that picks the best checkpoint is the EMA's) and back
    after, and kept in every checkpoint under `CKPT_KEY` (the key checkpoints written before this callback hold).

    Put it before the checkpoint writer: a checkpoint written at a step's end then holds that step's average."""

    def __init__(self, cfg: EmaConfig):
        self.ema = KitEma(cfg)
        self._updates = 0  # optimizer updates before the current batch

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ema.start(pl_module)  # on the device now; a resumed average was loaded by on_load_checkpoint

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._updates = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step > self._updates:  # this batch ended with an optimizer update (not mid-accumulation)
            self.ema.update(pl_module, self._updates)  # timm's warmup counts the updates before this one

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ema.swap(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ema.swap(pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = self.ema.state()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        self.ema.load(checkpoint.get(CKPT_KEY))
