"""Notebook bootstrap: Drive mounting, gdown fetch, offline wheelhouse, and the notebook's steps (one call per cell).

`from kitpkg import notebook as nb` is cheap: the steps import torch, Lightning and the converter only when called.
"""
from .steps import demo_shards, experiment, find_lr, find_shards, plan, submit

__all__ = ["demo_shards", "experiment", "find_lr", "find_shards", "plan", "submit"]
