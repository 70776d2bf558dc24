"""Shared fixtures: a small generated demo dataset and its shards in both formats (made once per test session)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("KITPKG_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARD_SIZE = 64  # image side of the test shards: small keeps the suite fast on 2 cores


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory):
    """A few dozen learnable demo JPEGs + train.csv + test.csv (several images per patient, ~10 % positives)."""
    from kitpkg.shards.demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo_src"), n_patients=16, images_per_patient=3, n_test=10,
                          width=320, height=240, seed=0)


def _convert(tmp_path_factory, demo_source, fmt):
    from kitpkg.shards.convert import convert

    out = tmp_path_factory.mktemp(f"shards_{fmt}")
    manifests = convert(demo_source.images, demo_source.train_csv, out, fmt=fmt, sizes=(SHARD_SIZE,), folds=3,
                        test_csv=demo_source.test_csv, shard_samples=8, workers=1, progress=False)
    return manifests[SHARD_SIZE]


@pytest.fixture(scope="session")
def tfrecord_manifest(tmp_path_factory, demo_source):
    """Manifest of TFRecord shards converted from `demo_source` (3 folds, test split included)."""
    return _convert(tmp_path_factory, demo_source, "tfrecord")


@pytest.fixture(scope="session")
def wds_manifest(tmp_path_factory, demo_source):
    """Manifest of WebDataset tar shards converted from `demo_source` (3 folds, test split included)."""
    return _convert(tmp_path_factory, demo_source, "wds")


@pytest.fixture(scope="session", params=["tfrecord", "wds"])
def any_manifest(request):
    """Each shard format in turn."""
    return request.getfixturevalue(f"{request.param}_manifest")
