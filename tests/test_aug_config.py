"""data.aug in the config: a serialised albumentations Compose round-trips through the YAML, is refused in one line when
wrong, is applied per training sample in the loader workers and repeats exactly after a mid-epoch resume."""
from __future__ import annotations

import albumentations as A
import pytest
import torch
import yaml

from kitpkg.augment.stages import stages_of
from kitpkg.config import config_from_dict, config_hash, load_config
from kitpkg.data.dataset import ShardDataset, TrainOptions
from kitpkg.data.loader import ShardLoader
from kitpkg.errors import KitError

COMPOSE = A.Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(brightness_limit=0.3, p=1.0),
                     A.OneOf([A.MotionBlur(blur_limit=5), A.GaussianBlur(blur_limit=5)], p=0.5)])


def _write(tmp_path, aug, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"data": {"shards": "shards", "aug": aug}}))
    return path


def test_pasted_to_dict_round_trips_through_the_yaml(tmp_path):
    config = load_config(_write(tmp_path, {"cpu": A.to_dict(COMPOSE)}))
    cpu, gpu = stages_of(config)
    assert A.to_dict(cpu) == A.to_dict(COMPOSE)
    assert gpu == [], "no flips unless the flags are set (test_flip_defaults.py)"
    plain = load_config(_write(tmp_path, {}, "plain.yaml"))
    assert config_hash(config) != config_hash(plain), "the CPU stage is in the config hash"


@pytest.mark.parametrize("aug, words", [
    ({"cpu": {"transform": {"__class_fullname__": "HorizontalFlipp", "p": 0.5}}},
     ["exp.yaml: data.aug.cpu", "'HorizontalFlipp'", "did you mean 'HorizontalFlip'"]),
    ({"cpu": {"__class_fullname__": "Blur", "blur_limt": 3}}, ["data.aug.cpu", "Blur", "'blur_limt'"]),
    ({"gpu": [{"name": "cutout", "sise": 0.3}]}, ["data.aug.gpu[0] (cutout)", "'sise'"]),
    ({"preset": "isik"}, ["data.aug.preset", "'isik'", "isic, light"]),
    ({"cpu": {"__class_fullname__": "Affine", "p": 1, "translate_percent": float("nan")}},
     ["data.aug.cpu", "(Affine)", "translate_percent=nan", "finite"]),
    ({"cpu": {"__class_fullname__": "Affine", "p": 1, "rotate": [float("-inf"), 3]}},
     ["data.aug.cpu", "(Affine)", "rotate=[-inf, 3]", "finite"]),
    ({"preset": "isic", "vflip": False}, ["data.aug.vflip"]),
])
def test_a_bad_stage_is_one_line_at_load(tmp_path, aug, words):
    with pytest.raises(KitError) as err:
        load_config(_write(tmp_path, aug))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_explicit_stages_override_the_preset():
    isic = config_from_dict({"data": {"shards": "x", "aug": {"preset": "isic"}}})
    cpu, gpu = stages_of(isic)
    assert cpu is not None and any(op["name"] == "cutout" for op in gpu)
    mine = config_from_dict({"data": {"shards": "x", "aug": {"preset": "isic", "cpu": {}, "gpu": [
        {"name": "hflip", "p": 0.5}]}}})
    assert stages_of(mine) == (None, [{"name": "hflip", "p": 0.5}])


def _loader(manifest, augment, workers=0):
    return ShardLoader(ShardDataset(manifest, "train", 1, batch_size=4, seed=3,
                                    train_options=TrainOptions(augment=augment)), num_workers=workers)


def test_cpu_stage_changes_training_pixels_only(tfrecord_manifest):
    augment, _ = stages_of(config_from_dict({"data": {"shards": "x", "aug": {"cpu": A.to_dict(COMPOSE)}}}))
    plain, augmented = next(iter(_loader(tfrecord_manifest, None))), next(iter(_loader(tfrecord_manifest, augment)))
    assert plain["id"] == augmented["id"]
    assert plain["image"].shape == augmented["image"].shape and augmented["image"].dtype == torch.uint8
    assert not torch.equal(plain["image"], augmented["image"])
    ev = ShardDataset(tfrecord_manifest, "val", 1, batch_size=4, train_options=TrainOptions(augment=augment))
    assert ev.augment is None, "never on eval/test/predict"


def test_augmentations_repeat_after_a_mid_epoch_resume(tfrecord_manifest):
    augment, _ = stages_of(config_from_dict({"data": {"shards": "x", "aug": {"cpu": A.to_dict(COMPOSE)}}}))
    reference = [b["image"].clone() for b in _loader(tfrecord_manifest, augment, workers=2)]
    first = _loader(tfrecord_manifest, augment)
    it = iter(first)
    taken = [next(it)["image"].clone() for _ in range(3)]
    state = first.state_dict()
    second = _loader(tfrecord_manifest, augment, workers=2)
    second.load_state_dict(state)
    resumed = taken + [b["image"].clone() for b in second]
    assert len(resumed) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(resumed, reference)), "a resumed epoch sees the same augmentations"


def test_datamodule_takes_the_stage_from_the_config(tfrecord_manifest, fold_datamodule):
    config = config_from_dict({"data": {"shards": tfrecord_manifest.root, "image_size": 64, "batch_size": 4,
                                        "num_workers": 0, "aug": {"cpu": A.to_dict(COMPOSE)}}})
    dm = fold_datamodule(config, 1)
    assert A.to_dict(dm.train_dataloader().dataset.augment) == A.to_dict(COMPOSE)
    assert dm.val_dataloader().dataset.augment is None
