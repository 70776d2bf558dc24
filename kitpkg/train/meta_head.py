"""Patient metadata as model input (`model.meta`): an MLP on batch["meta"] joined to the image features before the head.

As the SIIM-ISIC 2020 1st place (haqishen, `models.py`): meta -> 512 -> 128 (Linear, BatchNorm, SiLU; dropout after
the first block), concatenated with the CNN's pooled features (timm `num_classes=0`), then one linear head. The
encoding (kitpkg/data/meta.py `MetaEncoder`) is fitted per fold on the training folds only and kept as plain JSON in
the run directory (fold{k}/meta.json) and in every checkpoint's hyperparameters, so resume and prediction encode the
same way as training did.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Set

import torch
from torch import nn

from ..data.meta import MetaEncoder
from ..errors import KitError
from ..fsutil import atomic_write_text
from ..rundir import RunDir
from .fp32_head import fp32_forward

META_HIDDEN = (512, 128)
META_DROPOUT = 0.3


class MetaNet(nn.Module):
    """A timm backbone (pooled features) + an MLP on the metadata vector -> one linear head over both."""

    def __init__(self, backbone: nn.Module, meta_width: int, num_classes: int):
        super().__init__()
        first, second = META_HIDDEN
        self.backbone = backbone
        self.meta = nn.Sequential(
            nn.Linear(meta_width, first), nn.BatchNorm1d(first), nn.SiLU(), nn.Dropout(META_DROPOUT),
            nn.Linear(first, second), nn.BatchNorm1d(second), nn.SiLU())
        self.head = fp32_forward(nn.Linear(int(backbone.num_features) + second, num_classes))
        fp32_forward(self.meta[4])  # the branch's last Linear: its 128 outputs meet the image features in fp32

    def forward(self, images: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        """Logits (B×num_classes, fp32) of normalised images and their B×meta_width encoded metadata."""
        features = self.backbone(images)
        return self.head(torch.cat([features.float(), self.meta(meta.float()).float()], dim=1))

    def no_weight_decay(self) -> Set[str]:
        """The backbone's parameters kept out of weight decay (a ViT's pos_embed, cls_token), by their names here."""
        names = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else ()
        return {f"backbone.{name}" for name in names}


def backbone_of(model: nn.Module) -> nn.Module:
    """The timm model inside (the model itself when it has no meta branch)."""
    return model.backbone if isinstance(model, MetaNet) else model


def stored_meta(config: Any, run_dir: Path, k: int) -> Optional[MetaEncoder]:
    """Fold k's metadata encoder stored in run_dir/fold{k}/meta.json (None: none stored, or no `model.meta`)."""
    names = list(config.model.meta)
    path = RunDir(run_dir).meta(k)
    if not names or not path.exists():
        return None
    try:
        encoder = MetaEncoder.from_state(json.loads(path.read_text()))
    except ValueError as err:
        raise KitError(f"{path}: unreadable metadata encoding ({err}); delete it to fit it again") from None
    if encoder.names != names:
        raise KitError(f"{path}: encodes columns {encoder.names}, model.meta is {names}; delete "
                       f"{path.parent} to retrain fold {k}, or restore model.meta")
    return encoder


def fold_meta(config: Any, inputs: Any, run_dir: Path, k: int, is_writer: bool = True,
              fit: Optional[Callable[[], MetaEncoder]] = None) -> Optional[MetaEncoder]:
    """Fold k's metadata encoder: the one stored in run_dir/fold{k}/meta.json, else fitted now on fold k's training
    samples (by `fit`, the fold's data module's `fitted_meta`; default: a data module made for it) and stored there
    (by `is_writer`, rank 0); None without `model.meta`."""
    names = list(config.model.meta)
    if not names:
        return None
    path = RunDir(run_dir).meta(k)
    stored = stored_meta(config, run_dir, k)
    if stored is not None:
        return stored
    if fit is None:
        from ..data.datamodule import ShardDataModule

        fit = ShardDataModule(inputs.manifest, fold=k, extra_train=inputs.extras_for(k),
                              cache_dir=config.data.cache_dir, image_size=config.data.image_size, meta=names).fitted_meta
    encoder = fit()
    if is_writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(encoder.state_dict(), indent=1))
    return encoder
