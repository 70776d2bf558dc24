"""kitpkg: shards, a streaming loader and K-fold training for image-classification competitions on Kaggle and Colab.

Heavy libraries (torch, Lightning, timm) are imported only when a name that needs them is first used, so `import kitpkg`
and `kitpkg --help` stay fast in a notebook's first cell.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# public name -> module that defines it (resolved lazily, PEP 562)
_LAZY = {
    "load_manifest": "kitpkg.shards.manifest",
    "Manifest": "kitpkg.shards.manifest",
    "convert": "kitpkg.shards.convert",
    "ConvertOptions": "kitpkg.shards.options",
    "verify": "kitpkg.shards.verify",
    "ShardDataset": "kitpkg.data.dataset",
    "ShardDataModule": "kitpkg.data.datamodule",
    "load_config": "kitpkg.config",
    "run_cv": "kitpkg.train.cv",
    "setup": "kitpkg.notebook.bootstrap",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kitpkg' has no attribute {name!r}")
