"""Seeds per fold: each fold draws its own dropout, augmentation, mixup and training order (the fold ensemble gains
diversity), while a fold begun before seeds followed the fold resumes with the seeds it began with."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from kitpkg.config import load_config
from kitpkg.train import cv
from kitpkg.train.inputs import load_inputs
from kitpkg.train.recipe import build_recipe
from kitpkg.train.seeds import StepSeed, fold_seed, seeding_fold

from conftest import write_train_config


def _draws(recipe, batch_idx=0):
    step = SimpleNamespace(current_epoch=0, global_rank=0)
    StepSeed(recipe.seed).on_train_batch_start(step, None, None, batch_idx)  # what the trainer calls before a step
    return torch.rand(4)


def test_folds_draw_differently_at_the_same_step(tmp_path, tfrecord_manifest):
    config = load_config(write_train_config(tmp_path, tfrecord_manifest))
    data = load_inputs(config)
    recipes = [build_recipe(config, data, k) for k in (0, 1, 1)]
    draws = [_draws(r) for r in recipes]
    assert not torch.equal(draws[0], draws[1])  # fold 0 and fold 1: other dropout/augmentation draws
    assert torch.equal(draws[1], draws[2])  # the same fold: the same draws (exact resume)
    seeds = [cv.make_datamodule(recipes[k], data).seed for k in (0, 1)]
    assert seeds[0] != seeds[1]  # and another training order
    assert seeds[0] == recipes[0].seed == fold_seed(config.train.seed, 0)
    assert cv.make_module(recipes[1], load_pretrained=False).hparams["fold"] == 1  # recorded in every checkpoint


def test_a_fold_begun_before_fold_seeds_resumes_with_the_run_seed(tmp_path):
    """A checkpoint whose hyperparameters have no "fold" (written before seeds followed the fold) keeps the run seed
    for module and loader, so its resume is still exact; new checkpoints say their fold."""
    old, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"
    torch.save({"hyper_parameters": {"config": {}, "num_classes": 1}}, old)
    torch.save({"hyper_parameters": {"config": {}, "num_classes": 1, "fold": 3}}, new)
    assert seeding_fold(None, 3) == 3  # a fresh fold
    assert seeding_fold(old, 3) is None and fold_seed(42, None) == 42
    assert seeding_fold(new, 3) == 3
