"""What attached (read-only) datasets offer, found by walking their folder (Kaggle's /kaggle/input)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from ..rundir import STATE_NAME
from ..train.weights import WEIGHT_SUFFIXES

_WALK_DEPTH = 6  # attached Kaggle datasets mount at /kaggle/input/<slug>/ or a few levels deeper


@dataclass(frozen=True)
class Attached:
    """What attached (read-only) datasets offer: shard sets, offline wheelhouses, model weights, run directories."""

    manifests: Tuple[Path, ...] = ()
    wheelhouses: Tuple[Path, ...] = ()
    weights: Tuple[Path, ...] = ()
    runs: Tuple[Path, ...] = ()  # folders holding a state.json: kitpkg run directories (e.g. a version's output)


def find_attached(root: Optional[Path], max_depth: int = _WALK_DEPTH) -> Attached:
    """Walk `root` (e.g. /kaggle/input) for manifest.json folders, folders of kitpkg wheels, weight files and run
    directories (a run directory's own checkpoints are not listed as weights)."""
    if root is None or not root.is_dir():
        return Attached()
    manifests: List[Path] = []
    wheelhouses: List[Path] = []
    weights: List[Path] = []
    runs: List[Path] = []
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        if len(here.parts) - base_depth >= max_depth:
            dirs[:] = []
        dirs.sort()
        if STATE_NAME in files:  # a run directory of `kitpkg cv`
            runs.append(here)
            dirs[:] = []  # its fold folders are part of it, not datasets of their own
            continue
        if "manifest.json" in files:
            manifests.append(here)
        if any(f.startswith("kitpkg-") and f.endswith(".whl") for f in files):
            wheelhouses.append(here)
        weights.extend(here / f for f in sorted(files) if f.endswith(WEIGHT_SUFFIXES))
    return Attached(tuple(sorted(manifests)), tuple(sorted(wheelhouses)), tuple(sorted(weights)), tuple(sorted(runs)))
