"""`data.aug`'s GPU stage as a callback: each training batch's images augmented on the device before the step.

Its draws come from torch's CPU generator, which StepSeed (seeds.py, the callback before this one) seeds at every
step, so a resumed step augments the same way. Out: float 0..1 images (the module normalises either kind).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch


class GpuAugment(pl.Callback):
    """Replaces batch["image"] of every training batch by the GPU stage built from `spec` (augment/gpu.py)."""

    def __init__(self, spec: Optional[List[Dict[str, Any]]]):
        from ..augment.gpu import build_gpu_stage

        self.stage = build_gpu_stage(spec)

    def augment(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The stage on a batch of images (unchanged without one), drawing from `generator` (default: torch's)."""
        if self.stage is None:
            return images
        return self.stage(images, generator if generator is not None else torch.default_generator)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # under the autocast training_step runs in, where this stage ran before it was a callback: its matrix
        # products (the affine warp) compute in the same precision
        with trainer.precision_plugin.train_step_context():
            batch["image"] = self.augment(batch["image"])
