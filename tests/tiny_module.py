"""A KitModule straight from a config (no shards): the recipe of a run with `num_classes` classes, no fold."""
from __future__ import annotations

from types import SimpleNamespace


def recipe_of(config, num_classes=1, score_index=None, fold=None):
    """build_recipe for a config whose data has `num_classes` (and `score_index`), without a RunInputs."""
    from kitpkg.task import task_of_outputs
    from kitpkg.train.recipe import build_recipe

    return build_recipe(config, SimpleNamespace(task=task_of_outputs(num_classes, score_index, score_index)), fold)


def module_of(config, num_classes=1, **kwargs):
    """KitModule(recipe_of(config, num_classes), **kwargs)."""
    from kitpkg.train.model import KitModule

    return KitModule(recipe_of(config, num_classes), **kwargs)
