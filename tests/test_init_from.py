"""model.init_from: fold k starts from another run's fold k best weights (another size of the same convert), loaded
safely and checked; a run lacking fold k, other folds or another architecture is a one-line error."""
from __future__ import annotations

import pytest
import torch

from kitpkg.config import load_config
from kitpkg.errors import KitError
from kitpkg.train import cv
from kitpkg.train.inputs import load_inputs
from kitpkg.train.checkpoint import load_checkpoint
from kitpkg.train.init_from import init_fold, load_fitting
from kitpkg.train.recipe import build_recipe

from tiny_tables import noise_shards, tiny_config

pytestmark = pytest.mark.slow
ROWS = [{"image_name": f"img{i:03d}", "target": int(i % 3 == 0)} for i in range(40)]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """(folder, shards OUT with sizes 32 and 48, run dir of fold 0 trained at 32 px)."""
    folder = tmp_path_factory.mktemp("init_from")
    noise_shards(folder, ROWS, sizes=(32, 48))
    path = tiny_config(folder, folder / "shards", "small", data={"folds": [0]}, train={"epochs": 1})
    cv.run_cv(load_config(path), folder / "small")
    return folder, folder / "shards", folder / "small"


def _large(folder, shards, source, **data):
    return load_config(tiny_config(folder, shards, "large", data={"image_size": 48, **data},
                                   model={"init_from": str(source)}, train={"epochs": 1}))


def test_fold_k_starts_from_the_source_fold_k_weights(source_run, monkeypatch):
    folder, shards, source = source_run
    best = load_checkpoint(source / "fold0" / "ckpt" / "best.ckpt")["state_dict"]
    name = next(k for k in best if k.endswith("weight") and best[k].dim() == 4)
    seen = {}
    real_fit = cv.fit

    def spy(trainer, module, *args):
        seen["start"] = module.state_dict()[name].clone()
        return real_fit(trainer, module, *args)

    monkeypatch.setattr(cv, "fit", spy)
    config = _large(folder, shards, source, folds=[0])
    cv.run_cv(config, folder / "large")
    assert torch.equal(seen["start"], best[name])
    fresh = cv.make_module(build_recipe(config, load_inputs(config), None), load_pretrained=False)
    assert not torch.equal(fresh.state_dict()[name], best[name])


def test_source_without_fold_k_is_refused(source_run):
    folder, shards, source = source_run
    config = _large(folder, shards, source)
    data = load_inputs(config)
    with pytest.raises(KitError, match=r"model.init_from: .* has no finished fold 1 \(finished: \[0\]\)"):
        init_fold(cv.make_module(build_recipe(config, data, None), False), str(source), data, 1)


def test_other_folds_are_refused(source_run, tmp_path):
    folder, _, source = source_run
    noise_shards(tmp_path, ROWS, seed=0, folds=4)  # the same samples, other folds
    config = _large(tmp_path, tmp_path / "shards", source, image_size=32)
    data = load_inputs(config)
    with pytest.raises(KitError, match=r"fold 0 of .* validated on other samples than fold 0 here"):
        init_fold(cv.make_module(build_recipe(config, data, None), False), str(source), data, 0)


def test_a_parameter_of_another_shape_is_named(source_run):
    folder, shards, source = source_run
    config = _large(folder, shards, source, folds=[0])
    config.model.num_classes = 3
    module = cv.make_module(build_recipe(config, load_inputs(config), None), False)
    weights = load_checkpoint(source / "fold0" / "ckpt" / "best.ckpt")["state_dict"]
    with pytest.raises(KitError, match=r"model.init_from: model\.fc\.weight is \(1, \d+\) in src but \(3, \d+\) here"):
        load_fitting(module, weights, "src")
