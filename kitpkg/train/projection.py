"""`kitpkg plan`'s arithmetic, pure: from rates measured on a few steps (plan.py) to the time of a fold and a CV.

A fold's projected time (seconds; every rate measured on this machine at the config's batch size):
  start-up     startup_s                                     from the fit's call to its first batch (Lightning's
                                                            set-up, the loader's workers), once per fold
  train        epochs × epoch_images / train_img_s          epoch_images: what the training loader yields per
                                                            epoch, oversampled by data.sampling.class_weights
  validation   epochs × val_images / eval_img_s              one view, once per epoch
  checkpoints  saves × ckpt_s                                saves: one per train.checkpoint_every_n_steps
                                                            optimizer steps, plus up to two per epoch (the
                                                            end-of-epoch checkpoint and a new best)
  predictions  (val_images + test_images) × views / eval_img_s   OOF and test, views = 1 + len(predict.tta)
Under DDP (train.devices N) the train, validation and prediction terms are divided by N (measured on one device,
assumed to scale). A run directory keeps (keep + 1) checkpoints per fold: `keep` resumable ones and best.ckpt.
The largest batch that fits is searched by `largest_fitting` (doubling, then bisecting) on any "does it fit" test.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Measured:
    """What a few real training steps measured at one image size (plan.py's `measure`)."""

    image_size: int
    batch_size: int
    steps: int  # training batches timed (after the warm-up)
    train_img_s: float  # Throughput's rate (loading the next batch included)
    loader_wait: float  # Throughput's share of training time spent waiting for batches
    loader_img_s: Optional[float]  # timing.loader_rate: the training loader alone
    eval_img_s: float  # validation images per second (one view)
    peak_bytes: int  # peak device memory (GPU: max_memory_allocated; CPU: the process's peak RSS)
    peak_of: str  # "GPU" or "CPU process RSS"
    device: str  # e.g. "T4 (sm 7.5)" or "CPU"
    precision: str  # e.g. "16-mixed + channels_last"
    ckpt_bytes: int  # one full-state checkpoint (weights, optimizer, EMA, loader position)
    ckpt_s: float  # seconds to write it to local disk
    device_bytes: Optional[int] = None  # the GPU's total memory (None on the CPU)
    startup_s: float = 0.0  # from trainer.fit's call to the first training batch


@dataclass(frozen=True)
class FoldShape:
    """The sizes of one fold: what its epochs hold and what it predicts."""

    fold: int
    epoch_images: int  # training samples an epoch yields (oversampled)
    shard_images: int  # training samples in the shards (without oversampling)
    batches: int  # training batches per epoch (one device)
    val_images: int
    test_images: int


def fold_seconds(m: Measured, shape: FoldShape, epochs: int, views: int, accumulate: int = 1,
                 every_n_steps: int = 50, world: int = 1) -> Dict[str, float]:
    """{train, validation, checkpoints, predictions, total} seconds of one fold (the module docstring's formula)."""
    steps = epochs * math.ceil(shape.batches / max(1, world) / max(1, accumulate))
    saves = steps // max(1, every_n_steps) + 2 * epochs
    parts = {"start-up": m.startup_s, "train": epochs * shape.epoch_images / m.train_img_s / world,
             "validation": epochs * shape.val_images / m.eval_img_s / world,
             "checkpoints": saves * m.ckpt_s,
             "predictions": (shape.val_images + shape.test_images) * views / m.eval_img_s / world}
    return {**parts, "total": sum(parts.values())}


def output_bytes(m: Measured, folds: int, keep: int) -> int:
    """The most checkpoint bytes the run directory holds at once: each fold's best.ckpt (a finished fold keeps only
    that: budget.keep_prediction_weights) and the training fold's `keep` resumable ones, × one checkpoint."""
    return (folds + keep) * m.ckpt_bytes


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int) -> Tuple[Optional[int], bool]:
    """(the largest batch size <= `limit` for which `fits` holds, or None when not even 1 does; whether the search
    stopped at `limit` without a failure). Doubles from `start` (halves when `start` fails), then bisects between the
    largest size that fit and the smallest that did not, to within an eighth of it."""
    start = max(1, min(int(start), int(limit)))
    if fits(start):
        good, bad = start, None
        while bad is None and good < limit:
            trial = min(2 * good, limit)
            if fits(trial):
                good = trial
            else:
                bad = trial
        if bad is None:
            return good, True
    else:
        good, bad = None, start
        while good is None and bad > 1:
            trial = bad // 2
            if fits(trial):
                good = trial
            else:
                bad = trial
        if good is None:
            return None, False
    while bad - good > max(1, good // 8):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good, False


def read_plan(run_dir: os.PathLike) -> Optional[Dict[str, Any]]:
    """plan.json of a run directory (None when absent or unreadable: it is advice, never needed)."""
    from ..rundir import RunDir

    try:
        data = json.loads(RunDir(Path(run_dir)).plan.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def planned_fold_s(plan: Optional[Mapping[str, Any]], config_hash: Optional[str]) -> Optional[float]:
    """The fold time a plan.json projected for the config `config_hash` (each planned size has its own hash; None:
    no plan, or none made for this config)."""
    sizes = plan.get("sizes") if isinstance(plan, Mapping) else None
    for entry in sizes.values() if isinstance(sizes, Mapping) else ():
        value = entry.get("fold_s") if isinstance(entry, Mapping) else None
        if entry.get("config_hash") == config_hash and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def duration(seconds: Optional[float]) -> str:
    """h:mm:ss (– for None)."""
    if seconds is None:
        return "–"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"


def size_text(n: Optional[float]) -> str:
    """Bytes as e.g. 3.2 GB or 210 MB (– for None)."""
    if n is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
