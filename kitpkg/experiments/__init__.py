"""Experiments as a whole: compare run directories (`kitpkg runs`) and blend runs on their OOF (`kitpkg blend`),
stack them under a level-2 model (`kitpkg stack`).

Public entry points (heavy imports happen on first use):
  show_runs(dirs=(), out=None) -> Path            kitpkg.experiments.table
  run_blend(runs, out, method=None) -> dict       kitpkg.experiments.blend
  run_stack(runs, out, columns=()) -> dict        kitpkg.experiments.stack
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"show_runs": "kitpkg.experiments.table", "find_runs": "kitpkg.experiments.runs",
         "run_blend": "kitpkg.experiments.blend", "run_stack": "kitpkg.experiments.stack"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kitpkg.experiments' has no attribute {name!r}")
