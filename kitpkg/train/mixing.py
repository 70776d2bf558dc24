"""`train.mixup`: Mixup / CutMix of a training batch with timm's `Mixup`, reproducible per step.

timm draws its parameters from numpy's global RNG; `Mixing` seeds it from (seed, epoch, batch, rank) for the one call
and puts the global state back, so a resumed step mixes the same way and nothing else sees a changed RNG.

Targets: one-logit (binary) batches are mixed as two classes and the positive column is kept -- the soft target
BCE takes (timm's one-hot smoothing of two classes equals kitpkg's symmetric binary smoothing); multi-class batches
get timm's soft one-hot targets and a soft-target cross entropy. timm needs an even batch: an odd batch mixes all but
its last sample, which keeps its own (smoothed) label. From `off_epoch` on nothing is mixed, but the targets keep
`label_smoothing` (as timm's train script: its Mixup still smooths with mixing disabled).

Metadata (`batch["meta"]`, model.meta) is mixed with the images' pairing and weights: timm mixes sample i with sample
n-1-i (the batch flipped) by lam (one per batch, or per pair/element), so the metadata row is lam * own + (1 - lam) *
partner's -- an image mixed from two samples beside one sample's metadata would be noise.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch

from ..config import MixupConfig
from ..errors import KitError
from ..task import Task
from .seeds import step_seed


class Mixed(NamedTuple):
    """A mixed training batch: float 0..1 images, soft targets (B one logit, B×C multi-class), metadata (or None)."""

    images: torch.Tensor
    target: torch.Tensor
    meta: Optional[torch.Tensor]


class Mixing:
    """Mixup/CutMix of (images, targets, metadata) on the device, switched off from `off_epoch` on."""

    def __init__(self, cfg: MixupConfig, task: Task):
        from timm.data import Mixup

        self.cfg = cfg
        self.one_logit = task.one_logit
        self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.prob,
                           switch_prob=cfg.switch_prob, mode=cfg.mode, label_smoothing=cfg.label_smoothing,
                           num_classes=2 if self.one_logit else task.outputs)

    def active(self, epoch: int) -> bool:
        """Whether batches of `epoch` are mixed."""
        return self.cfg.off_epoch is None or epoch < self.cfg.off_epoch

    def __call__(self, images: torch.Tensor, target: torch.Tensor, seed: int,
                 meta: Optional[torch.Tensor] = None) -> Mixed:
        """One batch mixed with draws from `seed` (the metadata with the images' pairing; see the module docstring)."""
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        n = len(x) - len(x) % 2
        saved = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            lam = self._mix_images(x[:n])  # mixes the view x[:n] in place
        finally:
            np.random.set_state(saved)
        soft = torch.cat([self._soft(target[:n], lam), self._soft(target[n:], 1.0)])  # an odd last sample: its own
        if meta is not None:
            meta = meta.float()
            meta = torch.cat([lam * meta[:n] + (1.0 - lam) * meta[:n].flip(0), meta[n:]])
        return Mixed(x, soft, meta)

    def targets(self, target: torch.Tensor) -> torch.Tensor:
        """The targets of an unmixed batch (after off_epoch): smoothed by label_smoothing, else as they are."""
        return self._soft(target, 1.0) if self.cfg.label_smoothing else target

    def _mix_images(self, x: torch.Tensor) -> Union[float, torch.Tensor]:
        # timm's Mixup.__call__ without its target step, to get lam (a float, or B×1 per pair/element) for the
        # metadata; targets go through the same mixup_target it would call
        if self.mixup.mode == "elem":
            return self.mixup._mix_elem(x)
        if self.mixup.mode == "pair":
            return self.mixup._mix_pair(x)
        return self.mixup._mix_batch(x)

    def _soft(self, target: torch.Tensor, lam: Union[float, torch.Tensor]) -> torch.Tensor:
        from timm.data.mixup import mixup_target

        soft = mixup_target(target, self.mixup.num_classes, lam, self.cfg.label_smoothing)
        return soft[:, 1] if self.one_logit else soft


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy against soft (mixed) B×C targets."""
    return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def build_mixing(cfg: Optional[MixupConfig], task: Task, loss: str) -> Optional[Mixing]:
    """The Mixing of `train.mixup` (None when off); KitError for a loss that cannot take mixed multi-class targets."""
    if cfg is None:
        return None
    if not task.one_logit and loss == "focal":
        raise KitError("train.loss: focal cannot take mixed multi-class targets; use ce (or auto) with train.mixup")
    return Mixing(cfg, task)


MIX_STREAM = 2  # step_seed's stream of the mixing draws: apart from StepSeed's torch seed of the same step


class MixBatch(pl.Callback):
    """train.mixup as a callback: rewrites each training batch's images, targets and metadata (`Mixing`, until its
    off_epoch; its label smoothing stays after that). After GpuAugment: the augmented images are mixed."""

    def __init__(self, mixing: Mixing, seed: int):
        self.mixing, self.seed = mixing, int(seed)

    def mix(self, batch: Dict[str, Any], epoch: int, batch_idx: int, rank: int = 0) -> None:
        """Mix `batch` in place with the draws of step (epoch, batch_idx, rank)."""
        if not self.mixing.active(epoch):
            batch["target"] = self.mixing.targets(batch["target"])
            return
        mixed = self.mixing(batch["image"], batch["target"], step_seed(self.seed, epoch, batch_idx, rank, MIX_STREAM),
                            batch.get("meta"))
        batch["image"], batch["target"] = mixed.images, mixed.target
        if mixed.meta is not None:
            batch["meta"] = mixed.meta

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.mix(batch, trainer.current_epoch, batch_idx, trainer.global_rank)
