"""`train.mixup`: Mixup / CutMix of a training batch with timm's `Mixup`, reproducible per step.

timm draws its parameters from numpy's global RNG; `Mixing` seeds it from (seed, epoch, batch, rank) for the one call
and puts the global state back, so a resumed step mixes the same way and nothing else sees a changed RNG.

Targets: binary (one logit) batches are mixed as two classes and the positive column is kept -- the soft target
BCE takes (timm's one-hot smoothing of two classes equals kitpkg's symmetric binary smoothing); multi-class batches
get timm's soft one-hot targets and a soft-target cross entropy. timm needs an even batch: an odd batch mixes all but
its last sample, which keeps its own (smoothed) label.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..config import MixupConfig
from ..errors import KitError


class Mixing:
    """Mixup/CutMix of (images, targets) on the device, switched off from `off_epoch` on."""

    def __init__(self, cfg: MixupConfig, num_classes: int):
        from timm.data import Mixup

        self.cfg = cfg
        self.binary = num_classes == 1
        self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.prob,
                           switch_prob=cfg.switch_prob, mode=cfg.mode, label_smoothing=cfg.label_smoothing,
                           num_classes=2 if self.binary else num_classes)

    def active(self, epoch: int) -> bool:
        """Whether batches of `epoch` are mixed."""
        return self.cfg.off_epoch is None or epoch < self.cfg.off_epoch

    def __call__(self, images: torch.Tensor, target: torch.Tensor, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mixed float 0..1 images, soft targets: B (binary) or B×C) of one batch, drawn from `seed`."""
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        n = len(x) - len(x) % 2
        saved = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            _, mixed = self.mixup(x[:n], target[:n])  # mixes the view x[:n] in place
        finally:
            np.random.set_state(saved)
        if n < len(x):
            from timm.data.mixup import mixup_target

            rest = mixup_target(target[n:], self.mixup.num_classes, 1.0, self.cfg.label_smoothing)
            mixed = torch.cat([mixed, rest])
        return x, (mixed[:, 1] if self.binary else mixed)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy against soft (mixed) B×C targets."""
    return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def build_mixing(cfg: Optional[MixupConfig], num_classes: int, loss: str) -> Optional[Mixing]:
    """The Mixing of `train.mixup` (None when off); KitError for a loss that cannot take mixed multi-class targets."""
    if cfg is None:
        return None
    if num_classes > 1 and loss == "focal":
        raise KitError("train.loss: focal cannot take mixed multi-class targets; use ce (or auto) with train.mixup")
    return Mixing(cfg, num_classes)
