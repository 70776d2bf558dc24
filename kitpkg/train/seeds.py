"""Seeds: every random draw of training is a function of (run seed, fold, epoch, batch, rank), so a resumed fold
repeats its draws exactly and each fold draws its own (the fold ensemble gains diversity).

  fold_seed     the fold's seed (its training order and its step draws), hashed from the run seed and the fold
  step_seed     a step's seed from the fold's seed and (epoch, batch, rank[, stream])
  StepSeed      the callback that seeds torch at every training step (dropout, drop-path, the GPU stage)
  seeding_fold  which fold a resumed checkpoint's seeds derive from (None for one begun before seeds followed folds)
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch


def step_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from the fold's seed and (epoch, batch, rank): randomness is a pure function of the step."""
    text = ":".join(str(int(p)) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def fold_seed(seed: int, fold: Optional[int]) -> int:
    """The seed of fold `fold`'s training order and step draws (31 bits), from the run seed; the run seed itself for
    None (no fold, or a fold begun before seeds followed the fold). Hashed, not seed + fold: runs seeded 42 and 43
    must not share draws between their folds 1 and 0."""
    if fold is None:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:fold:{int(fold)}".encode()).digest()[:4], "little") >> 1


def seeding_fold(checkpoint: Optional[Path], fold: int) -> Optional[int]:
    """The fold index fold `fold`'s seeds derive from when it resumes from `checkpoint` (None: a fresh start): the
    fold, or None for a checkpoint written before seeds followed the fold, so that fold resumes exactly as it began."""
    if checkpoint is None:
        return fold
    from .checkpoint import load_checkpoint

    hparams = load_checkpoint(checkpoint).get("hyper_parameters") or {}
    return hparams["fold"] if "fold" in hparams else None


class StepSeed(pl.Callback):
    """Seeds torch (CPU and CUDA generators) before every training step from (fold seed, epoch, batch, rank).

    First among the callbacks: the batch stages after it (GPU augmentation) draw from what it seeded, and so do the
    step's dropout and drop-path; a resumed run repeats them, another fold draws its own."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank))
