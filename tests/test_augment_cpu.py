"""data.aug.cpu: an A.to_dict pipeline pasted into the YAML builds, seeds per sample, names the transform it refuses."""
import albumentations as A
import numpy as np
import pytest
import yaml

from kitpkg.augment import augment_sample, build_cpu_stage, sample_seed
from kitpkg.errors import KitError


def _image(seed=0, size=48):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _compose():
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(0.3, 0.3, p=1.0),
        A.OneOf([A.MotionBlur(blur_limit=5), A.GaussianBlur(blur_limit=5)], p=0.8),
        A.Affine(rotate=(-20, 20), p=1.0),
    ])


def _through_yaml(spec):
    return yaml.safe_load(yaml.safe_dump(spec))


@pytest.mark.parametrize("bare", [False, True])
def test_a_serialised_compose_round_trips_through_yaml_and_reproduces_pixels_per_seed(bare):
    spec = A.to_dict(_compose())
    spec = _through_yaml(spec["transform"] if bare else spec)
    stage, again = build_cpu_stage(spec), build_cpu_stage(_through_yaml(A.to_dict(_compose())))
    img = _image()
    first = augment_sample(stage, img, seed=7)
    assert first.shape == img.shape and first.dtype == np.uint8
    assert np.array_equal(first, augment_sample(again, img, seed=7))  # a fresh build (a resumed run) sees the same
    assert np.array_equal(first, augment_sample(stage, img, seed=7))  # and so does the same stage called again
    assert not np.array_equal(first, augment_sample(stage, img, seed=8))
    assert not np.array_equal(first, img)


def test_sample_seed_depends_on_every_part_of_the_position():
    base = sample_seed(0, 1, 2, 3)
    assert base == sample_seed(0, 1, 2, 3)
    assert len({base, sample_seed(1, 1, 2, 3), sample_seed(0, 2, 2, 3), sample_seed(0, 1, 3, 3),
                sample_seed(0, 1, 2, 4)}) == 5


def test_no_spec_is_no_stage_and_a_single_transform_is_wrapped():
    assert build_cpu_stage(None) is None and build_cpu_stage({}) is None
    img = _image()
    assert augment_sample(None, img, 1) is img
    flip = build_cpu_stage(A.to_dict(A.HorizontalFlip(p=1.0)))
    assert np.array_equal(augment_sample(flip, img, 1), img[:, ::-1])


def _spec(*transforms):
    return {"__class_fullname__": "Compose", "p": 1.0, "transforms": list(transforms)}


@pytest.mark.parametrize("spec, words", [
    (["HorizontalFlip"], ["data.aug.cpu", "expected a mapping", "list"]),
    (_spec({"__class_fullname__": "Cutout", "p": 0.5}), ["transforms[0]", "unknown albumentations transform 'Cutout'",
                                                          "2."]),
    (_spec({"__class_fullname__": "HorizontalFlp", "p": 0.5}), ["did you mean 'HorizontalFlip'"]),
    (_spec({"__class_fullname__": "HorizontalFlip", "p": 0.5, "limit": 3}),
     ["transforms[0] (HorizontalFlip)", "invalid argument(s) 'limit'"]),
    (_spec({"__class_fullname__": "GaussianBlur", "blur_limit": "big", "p": 1.0}),
     ["transforms[0] (GaussianBlur)", "blur_limit"]),
    (_spec({"__class_fullname__": "HorizontalFlip", "p": 5}), ["(HorizontalFlip)", "p:", "less than or equal to 1"]),
    (_spec({"__class_fullname__": "OneOf", "p": 0.5, "transforms": [{"__class_fullname__": "Blurr", "p": 1.0}]}),
     ["transforms[0].transforms[0]", "'Blurr'"]),
    (_spec({"p": 0.5}), ["transforms[0] has no '__class_fullname__'"]),
    (_spec("Blur"), ["transforms[0] is str"]),
])
def test_a_wrong_spec_is_one_line_naming_the_key_and_the_transform(spec, words):
    with pytest.raises(KitError) as err:
        build_cpu_stage(spec)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_the_key_in_messages_is_the_callers():
    with pytest.raises(KitError, match=r"^exp\.yaml: data\.aug\.cpu: "):
        build_cpu_stage(_spec({"__class_fullname__": "Nope", "p": 1}), key="exp.yaml: data.aug.cpu")
