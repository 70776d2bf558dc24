"""LR finder: Lightning's Tuner.lr_find on one fold's training data; plot + suggestion saved into the run directory.

With `optim.lookahead: true` the sweep runs on the base optimizer alone: Lookahead pulls the weights back to its slow
copy every k steps, which makes the loss-vs-LR curve saw-toothed and shifts the suggestion. The plot says so.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, Optional

from ..config import Config, class_weight_targets, write_config_value
from ..errors import KitError
from ..fsutil import atomic_write_text
from ..rundir import RunDir
from .trainer import build_trainer


def run_lr_find(config: Config, run_dir: Optional[os.PathLike] = None, fold: int = 0, write_config: bool = False,
                min_lr: float = 1e-6, max_lr: float = 1.0, num_training: int = 100) -> Dict[str, Any]:
    """Sweep the learning rate on fold `fold`'s train loader; write lr_find.json/.png; optionally set optim.lr."""
    import tempfile

    from pytorch_lightning.tuner import Tuner

    from .cv import fold_parts, make_module
    from .inputs import load_inputs
    from .model import check_components
    from .recipe import build_recipe, recipe_callbacks
    from .report import plot_lr_find
    from .runstate import run_directory
    from .seeds import fold_seed

    _check_sweep(num_training, min_lr, max_lr)
    inputs = load_inputs(config)
    if fold not in inputs.manifest.folds():
        raise KitError(f"--fold {fold}: not a fold of {inputs.manifest.root} (it has folds {inputs.manifest.folds()})")
    run_dir = run_directory(run_dir or config.output.run_dir)
    check_components(config, inputs.task)
    class_weight_targets(config.data.sampling.class_weights, inputs.manifest)  # keys naming no class
    run_dir.mkdir(parents=True, exist_ok=True)
    sweep = sweep_config(config)
    recipe = build_recipe(sweep, inputs, fold)
    dm, meta = fold_parts(recipe, inputs, run_dir, is_writer=False)  # the encoding cv fits for this fold (not stored)
    module = make_module(recipe, load_pretrained=True, meta=meta)
    # the sweep's step draws follow the run seed (its loader the fold's order), as they did before the recipe
    steps = dataclasses.replace(recipe, seed=fold_seed(sweep.train.seed, None))
    with tempfile.TemporaryDirectory(prefix="kitpkg-lrfind-") as tmp:  # Tuner's temporary checkpoint stays local
        # the sweep is num_training steps however short an epoch is (Tuner stops it by max_steps)
        trainer = build_trainer(recipe, recipe_callbacks(steps), default_root_dir=tmp, max_epochs=10_000)
        finder = Tuner(trainer).lr_find(module, datamodule=dm, min_lr=min_lr, max_lr=max_lr,
                                        num_training=num_training, update_attr=False, early_stop_threshold=None)
    if finder is None:
        raise KitError("lr-find: the LR finder returned nothing (too few training batches?)")
    suggestion = finder.suggestion()
    result = {"lr": [float(x) for x in finder.results["lr"]], "loss": [float(x) for x in finder.results["loss"]],
              "suggestion": float(suggestion) if suggestion is not None else None, "fold": fold,
              "optimizer": sweep.optim.name, "title": sweep_title(config)}
    atomic_write_text(RunDir(run_dir).lr_find, json.dumps(result))
    result["plot"] = str(run_dir / plot_lr_find(result, RunDir(run_dir).figure("lr_find")))
    if write_config:
        if result["suggestion"] is None:
            raise KitError("lr-find: no suggestion (loss curve too flat/short); optim.lr left unchanged")
        if not config.source:
            raise KitError("lr-find --write-config: the config did not come from a file")
        write_config_value(config.source, "optim.lr", float(f"{result['suggestion']:.3g}"))
    return result


def sweep_config(config: Config) -> Config:
    """The config the sweep trains with: the base optimizer when optim.lookahead is on (see the module docstring)."""
    if not config.optim.lookahead:
        return config
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, lookahead=False))


def sweep_title(config: Config) -> str:
    """The plot's title: which optimizer the sweep ran."""
    if config.optim.lookahead:
        return f"LR finder: base optimizer {config.optim.name} (Lookahead off for the sweep)"
    return f"LR finder: {config.optim.name}"


def _check_sweep(num_training: int, min_lr: float, max_lr: float) -> None:
    """KitError naming the option for a sweep the LR finder cannot run."""
    if num_training < 2:  # the suggestion needs a slope: at least two points
        raise KitError(f"--steps: must be >= 2, got {num_training}")
    if not 0 < min_lr < max_lr < math.inf:
        raise KitError(f"--min-lr {min_lr} / --max-lr {max_lr}: need 0 < min-lr < max-lr, both finite")
