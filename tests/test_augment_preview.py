"""The GPU augmentation stage in training (the GpuAugment callback after StepSeed) and `kitpkg augment-preview`."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from kitpkg import cli
from kitpkg.config import config_from_dict
from kitpkg.train.gpu_augment import GpuAugment
from kitpkg.train.model import apply_view
from kitpkg.train.seeds import StepSeed

from conftest import write_train_config
from tiny_module import recipe_of

VIEWS = ("hflip", "vflip", "transpose")


def _module(aug=None):
    """The GPU stage training runs for `aug` (the callback of the config's recipe)."""
    config = config_from_dict({"data": {"shards": "x", "aug": aug or {}}, "model": {"name": "test_resnet"}})
    return GpuAugment(recipe_of(config).stages.gpu)


def _images(n=8):
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_old_flip_flags_flip_each_sample_on_the_device():
    images = _images()
    out = _module({"hflip": True, "vflip": True, "transpose": True}).augment(images, torch.Generator().manual_seed(1))
    assert _module().augment(images) is images, "no flags set: no flips (test_flip_defaults.py)"
    assert out.dtype == torch.float32 and out.shape == images.shape
    x = images.float() / 255
    dihedral = []  # each subset of (hflip, vflip, transpose), applied in that order
    for mask in range(8):
        d = x
        for bit, view in enumerate(VIEWS):
            d = apply_view(d, view) if mask >> bit & 1 else d
        dihedral.append(d)
    assert all(any(torch.equal(out[i], d[i]) for d in dihedral) for i in range(len(x)))
    assert not torch.equal(out, x)


def test_gpu_stage_is_drawn_from_the_step_seeded_generator():
    module = _module({"gpu": [{"name": "cutout", "p": 1.0, "size": 0.5}, {"name": "hflip", "p": 0.5}]})
    images, target = _images(), torch.ones(8)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)  # what StepSeed does with step_seed(seed, epoch, batch, rank)
        runs.append(module.augment(images))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    holes = (runs[0] == 0).all(1).flatten(1).sum(1)
    assert (holes >= 8 * 8).all()  # every sample got its 8×8 hole: training saw the GPU stage


def test_no_gpu_stage_leaves_the_batch_alone():
    images = _images()
    assert _module({"gpu": []}).augment(images) is images


@pytest.mark.slow
def test_augment_preview_writes_the_grid_and_shows_the_augmentation(tfrecord_manifest, tmp_path, capsys):
    config = str(write_train_config(tmp_path, tfrecord_manifest))

    def preview(name, *overrides):
        out = tmp_path / name
        sets = [arg for o in overrides for arg in ("--set", o)]
        assert cli.main(["augment-preview", "--config", config, "--out", str(out), "--n", "4", *sets]) == 0
        return Image.open(out)

    augmented = preview("aug.png", "data.aug.preset=isic")
    plain = preview("plain.png", "data.aug.cpu={}", "data.aug.gpu=[]")
    assert augmented.size == plain.size == (2 * (64 + 2) + 2,) * 2  # 2×2 tiles of 64 px with 2 px gaps
    assert augmented.tobytes() != plain.tobytes()
    assert "augment preview:" in capsys.readouterr().out


def test_preview_shows_the_draws_training_makes_in_that_fold(tfrecord_manifest, tmp_path):
    from kitpkg.config import load_config
    from types import SimpleNamespace

    from kitpkg.train.cv import make_datamodule
    from kitpkg.train.inputs import load_inputs
    from kitpkg.train.preview import preview_images
    from kitpkg.train.recipe import build_recipe

    config = load_config(write_train_config(tmp_path, tfrecord_manifest), ["data.aug.preset=isic", "data.aug.cpu={}"])
    data = load_inputs(config)
    recipe = build_recipe(config, data, 1)
    batch = next(iter(make_datamodule(recipe, data).train_dataloader()))
    # training's own seeding of (epoch 0, batch 0, rank 0) in fold 1
    StepSeed(recipe.seed).on_train_batch_start(SimpleNamespace(current_epoch=0, global_rank=0), None, batch, 0)
    trained = GpuAugment(recipe.stages.gpu).augment(batch["image"])
    trained = trained.float() / 255 if trained.dtype == torch.uint8 else trained
    shown = preview_images(config, n=len(batch["id"]), fold=1)
    assert torch.equal(shown, trained)
