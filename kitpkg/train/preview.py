"""`kitpkg augment-preview`: a PNG grid of training samples as the model sees them, so a user looks instead of guessing.

The samples come from the fold's own training loader (its CPU stage, `data.aug.cpu` / the preset's, applied in the
workers), then go through the GPU stage training runs (`GpuAugment`, gpu_augment.py) with the generator of epoch 0's
steps: the grid shows what the first epoch trains on (before mixup, which blends whole images).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch

from ..config import Config
from ..errors import KitError
from ..fsutil import atomic_write


def preview_images(config: Config, n: int = 16, fold: Optional[int] = None) -> torch.Tensor:
    """n×3×H×W float 0..1: the first `n` training samples of `fold` (default: the first) after both stages."""
    from .cv import make_datamodule
    from .inputs import load_inputs
    from .gpu_augment import GpuAugment
    from .recipe import build_recipe
    from .seeds import step_seed

    if n < 1:
        raise KitError(f"--n: must be >= 1, got {n}")
    inputs = load_inputs(config)
    fold = inputs.manifest.folds()[0] if fold is None else fold
    if fold not in inputs.manifest.folds():
        raise KitError(f"--fold {fold}: not a fold of {inputs.manifest.root} (it has folds {inputs.manifest.folds()})")
    recipe = build_recipe(config, inputs, fold)
    stage = GpuAugment(recipe.stages.gpu)
    shown = []
    for batch_idx, batch in enumerate(make_datamodule(recipe, inputs).train_dataloader()):
        gen = torch.Generator()
        gen.manual_seed(step_seed(recipe.seed, 0, batch_idx, 0))  # what training seeds fold `fold`'s epoch 0 with
        with torch.no_grad():
            images = stage.augment(batch["image"], gen)
        shown.append(images.float() / 255 if images.dtype == torch.uint8 else images)
        if sum(len(x) for x in shown) >= n:
            break
    return torch.cat(shown)[:n]


def write_preview(config: Config, out: os.PathLike, n: int = 16, fold: Optional[int] = None) -> Path:
    """Write the preview grid (ceil(sqrt(n)) columns, 2 px gaps) as the PNG `out`; return its path."""
    from PIL import Image
    from torchvision.utils import make_grid

    out = Path(out)
    if out.is_dir():  # checked first: the write would fail only after the work, naming its temporary file
        raise KitError(f"--out {out}: is a folder; give the PNG file to write, e.g. {out / 'augment_preview.png'}")
    images = preview_images(config, n, fold)
    grid = make_grid(images, nrow=math.ceil(math.sqrt(len(images))), padding=2, pad_value=1.0)
    pixels = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    with atomic_write(out) as f:
        Image.fromarray(pixels).save(f, format="PNG")
    return out
