"""Augmentation presets ship as files; `light` is the old flips, `isic` the 1st-place list split for 2 vCPUs."""
import numpy as np
import pytest
import torch

from kitpkg.augment import augment_sample, build_cpu_stage, build_gpu_stage, load_preset, preset_names
from kitpkg.errors import KitError

# on one 2026-12-01 core at 384 px these take >= 1.5 ms an image (measured): the isic preset keeps them on the device
EXPENSIVE_ON_CPU = {"ElasticTransform", "GaussNoise", "GridDistortion", "OpticalDistortion", "ShiftScaleRotate",
                    "Affine", "CLAHE"}


def _names(node):
    yield node["__class_fullname__"]
    for child in node.get("transforms", []):
        yield from _names(child)


def test_light_is_the_flips_and_transpose_kitpkg_trained_with():
    light = load_preset("light")
    assert light.cpu is None
    assert light.gpu == [{"name": "hflip", "p": 0.5}, {"name": "vflip", "p": 0.5}, {"name": "transpose", "p": 0.5}]


def test_isic_keeps_only_cheap_transforms_on_the_cpu_and_the_rest_on_the_device():
    isic = load_preset("isic")
    cpu_names = set(_names(isic.cpu))
    assert not cpu_names & EXPENSIVE_ON_CPU
    assert {"RandomBrightnessContrast", "MotionBlur", "MedianBlur", "GaussianBlur"} <= cpu_names
    assert [op["name"] for op in isic.gpu] == ["transpose", "vflip", "hflip", "affine", "distort", "color", "noise",
                                              "cutout"]
    stage = build_cpu_stage(isic.cpu, key="data.aug.preset: isic")
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert augment_sample(stage, img, 1).shape == img.shape
    gpu = build_gpu_stage(isic.gpu)
    assert gpu(torch.from_numpy(img).permute(2, 0, 1)[None], torch.Generator().manual_seed(0)).shape == (1, 3, 64, 64)


def test_an_unknown_preset_lists_the_known_ones():
    assert {"light", "isic"} <= set(preset_names())
    with pytest.raises(KitError, match=r"data\.aug\.preset: unknown augmentation preset 'heavy'; known: isic, light"):
        load_preset("heavy")
