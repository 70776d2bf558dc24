"""A fold's recipe (train/recipe.py): decided once per fold, carried into training by callbacks, not by the module."""
from __future__ import annotations

import collections
import sys
from types import SimpleNamespace

import pytest

pl = pytest.importorskip("pytorch_lightning")

from kitpkg.config import config_from_dict, load_config  # noqa: E402

from conftest import write_train_config  # noqa: E402


def test_lr_find_takes_the_trainer_from_trainer_py():
    from kitpkg.train import lr_find, trainer

    assert lr_find.build_trainer is trainer.build_trainer


def test_mixing_ema_and_the_gpu_stage_are_callbacks_of_the_recipe():
    """The module keeps no EMA, mixing or augmentation of its own; the EMA's checkpoint key is the old one."""
    from kitpkg.task import task_of_outputs
    from kitpkg.train import recipe as R
    from kitpkg.train.ema import CKPT_KEY
    from kitpkg.train.model import KitModule

    config = config_from_dict({"data": {"shards": "x", "aug": {"gpu": [{"name": "hflip", "p": 0.5}]}},
                               "model": {"name": "test_resnet"},
                               "train": {"mixup": {"mixup_alpha": 0.4}, "ema": {"decay": 0.9}}})
    recipe = R.build_recipe(config, SimpleNamespace(task=task_of_outputs(1)), 2)
    assert (recipe.metric, recipe.monitor, recipe.seeds_from) == ("val_auc", ("val_auc", "max"), 2)
    callbacks = R.recipe_callbacks(recipe)
    assert [type(c).__name__ for c in callbacks] == ["StepSeed", "GpuAugment", "MixBatch", "EmaAverage"]
    assert KitModule.optimizer_step is pl.LightningModule.optimizer_step  # no EMA hook left in the module
    module = KitModule(recipe)
    ema = callbacks[-1]
    ema.on_fit_start(None, module)
    checkpoint = {}
    ema.on_save_checkpoint(None, module, checkpoint)
    assert set(checkpoint) == {CKPT_KEY} and set(checkpoint[CKPT_KEY]) <= set(module.state_dict())


def _calls(fn):
    """Run fn() counting the calls of resolve_device, stage_specs and ShardDataModule.__init__ (by code object)."""
    from kitpkg.augment import stages
    from kitpkg.data.datamodule import ShardDataModule
    from kitpkg.train import trainer

    codes = {trainer.resolve_device.__code__: "resolve_device", stages.stage_specs.__code__: "stage_specs",
             ShardDataModule.__init__.__code__: "ShardDataModule"}
    counts = collections.Counter()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            counts[codes[frame.f_code]] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return dict(counts)


def test_a_fold_resolves_its_recipe_once_and_builds_one_data_module(tmp_path, tfrecord_manifest):
    from kitpkg.train import cv

    config = load_config(write_train_config(tmp_path, tfrecord_manifest),
                         ["train.epochs=1", "data.aug.preset=isic", "model.meta=[sex, age_approx]",
                          "train.mixup={mixup_alpha: 0.4}", "train.ema={decay: 0.9}", "predict.tta=[]"])
    data, state = cv.open_run(config, tmp_path / "run")
    counts = _calls(lambda: cv.fit_fold(config, data, state, 1))
    assert counts == {"resolve_device": 1, "stage_specs": 1, "ShardDataModule": 1}
    assert state.is_done(1)
