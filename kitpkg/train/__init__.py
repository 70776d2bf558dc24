"""Training: LightningModule on timm, K-fold CV, OOF, test ensemble, TTA, LR finder, pseudo-labels, report.

Public entry points (heavy imports happen on first use):
  run_cv(config, run_dir=None, folds=None) -> CVResult          kitpkg.train.cv
  predict_test(config, run_dir=None, out=None) -> Path           kitpkg.train.cv
  run_parallel_cv(config, workers, run_dir=None, folds=None)     kitpkg.train.parallel
  merge_runs(config, dirs, into=None) -> (CVResult, conflicts)   kitpkg.train.merge
  run_lr_find(config, run_dir=None, fold=0, write_config=False)  kitpkg.train.lr_find
  make_pseudo_labels(out, run_dir=..., predictions=..., ...)     kitpkg.train.pseudo
  write_report(run_dir) -> Path                                  kitpkg.train.report
  build_recipe(config, data, fold) -> Recipe                     kitpkg.train.recipe
  KitModule(recipe, load_pretrained)                             kitpkg.train.model
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_cv": "kitpkg.train.cv",
    "predict_test": "kitpkg.train.cv",
    "CVResult": "kitpkg.train.cv",
    "run_parallel_cv": "kitpkg.train.parallel",
    "merge_runs": "kitpkg.train.merge",
    "run_lr_find": "kitpkg.train.lr_find",
    "make_pseudo_labels": "kitpkg.train.pseudo",
    "write_report": "kitpkg.train.report",
    "KitModule": "kitpkg.train.model",
    "Recipe": "kitpkg.train.recipe",
    "build_recipe": "kitpkg.train.recipe",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kitpkg.train' has no attribute {name!r}")
