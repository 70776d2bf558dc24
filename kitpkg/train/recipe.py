"""A fold's recipe: every decision about how fold k trains, made once from (Config, RunInputs, fold).

The device choice (precision, channels_last), the named augmentation stages, mixing, weight EMA, the validation metric
and the checkpoint monitor are resolved here, once per fold; the module (model.py), the data module, the trainer
(trainer.py), the callbacks and the fold's record read them from the `Recipe` instead of deciding again. The steps
that act on a training batch from outside the network are Lightning callbacks (`recipe_callbacks`), in this order:
  StepSeed (seeds.py)          seeds torch from (fold seed, epoch, batch, rank): the draws below and dropout
  GpuAugment (gpu_augment.py)  data.aug's GPU stage on batch["image"]
  MixBatch (mixing.py)         train.mixup: mixes images, targets and metadata
  EmaAverage (ema.py)          train.ema: updates after each optimizer step, swapped in for validation, in checkpoints
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from ..config import Config, EmaConfig
from ..task import Task
from .mixing import Mixing, build_mixing
from .seeds import fold_seed, seeding_fold
from .trainer import DeviceChoice, resolve_device


@dataclass(frozen=True)
class Recipe:
    """How one fold trains, resolved once (see the module docstring). `config` keeps the settings the network,
    optimizer, schedule, loss and Lightning's Trainer read as they are (model.*, optim.*, sched.*, train.*)."""

    config: Config
    task: Task  # what the fold predicts and how it is scored (kitpkg/task.py)
    fold: Optional[int]  # the fold whose data it trains on (None: all of it)
    seeds_from: Optional[int]  # the fold its seeds derive from (None: the run seed; see seeds.seeding_fold)
    seed: int  # fold_seed of seeds_from: step draws and the training order
    device: DeviceChoice
    stages: Any  # augment.stages.Stages: the built CPU stage and the GPU stage's spec
    mixing: Optional[Mixing]  # train.mixup (None: off)
    ema: Optional[EmaConfig]  # train.ema (None: off)
    monitor: Tuple[str, str]  # (metric key, "max"/"min") that picks the best checkpoint
    target_scale: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None  # regression: (means, stds), below

    @property
    def num_classes(self) -> int:
        """The network's outputs (logits)."""
        return self.task.outputs

    @property
    def metric(self) -> str:
        """The validation metric's logged key (val_auc, val_acc): the task's."""
        return self.task.scoring.key


def build_recipe(config: Config, inputs: Any, fold: Optional[int], resume: Optional[Path] = None) -> Recipe:
    """Fold `fold`'s recipe from the config and the run's data (its `task`); `resume`: the checkpoint the fold
    resumes from (its seeds follow what that checkpoint began with)."""
    from ..augment.stages import stages_of

    seeds_from = seeding_fold(resume, fold) if fold is not None else None
    return Recipe(config=config, task=inputs.task, fold=fold,
                  seeds_from=seeds_from, seed=fold_seed(config.train.seed, seeds_from),
                  device=resolve_device(config), stages=stages_of(config),
                  mixing=build_mixing(config.train.mixup, inputs.task, config.train.loss),
                  ema=config.train.ema, monitor=inputs.task.monitor(config.train.monitor),
                  target_scale=None if inputs.task.probabilities else target_scale(inputs, fold))


def target_scale(inputs: Any, fold: Optional[int]) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(means, stds) per label column of the targets fold `fold` trains on (its training folds and extra sets; None:
    every training sample): a regression trains on targets standardised by them and predicts back in the CSV's units
    (model.py keeps them as buffers, so checkpoints and a resume hold the values trained with)."""
    import numpy as np

    sets = [inputs.manifest, *inputs.extras_for(fold)]
    index = {name: i for i, name in enumerate(inputs.task.classes or ())}  # ordinal text classes: their index
    rows = [index.get(str(v), v) if index and inputs.task.kind == "ordinal" else v
            for m in sets for s in m.select("train") if fold is None or m is not inputs.manifest or s.fold != fold
            for v in s.labels or ()]
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    std = values.std(axis=0)
    return tuple(float(v) for v in values.mean(axis=0)), tuple(float(v) if v > 0 else 1.0 for v in std)


def recipe_callbacks(recipe: Recipe) -> List[Any]:
    """The callbacks that carry the recipe into training, in the order they must run (the module docstring)."""
    from .ema import EmaAverage
    from .gpu_augment import GpuAugment
    from .mixing import MixBatch
    from .seeds import StepSeed

    callbacks: List[Any] = [StepSeed(recipe.seed)]
    if recipe.stages.gpu:
        callbacks.append(GpuAugment(recipe.stages.gpu))
    if recipe.mixing is not None:
        callbacks.append(MixBatch(recipe.mixing, recipe.seed))
    if recipe.ema is not None:
        callbacks.append(EmaAverage(recipe.ema))
    return callbacks
