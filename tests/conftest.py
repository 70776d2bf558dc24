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


# --- training (kitpkg.train): one tiny finished CV run shared by the tests that only read its outputs ---------------
TRAIN_CONFIG = """\
data: {{shards: {shards}, image_size: 64, batch_size: 8, num_workers: 0}}
model: {{name: test_resnet, pretrained: false}}
optim: {{name: adamw, lr: 0.003}}
sched: {{name: cosine, warmup_epochs: 0}}
train: {{epochs: 2, seed: 1, deterministic: true, checkpoint_every_n_steps: 2, keep_checkpoints: 2}}
predict: {{tta: [hflip]}}
output: {{id_col: image_name, pred_col: target}}
"""


def run_ddp_cv(config_path, run_dir, *overrides, timeout=600):
    """`kitpkg cv` of config_path into run_dir as 2 gloo DDP processes on the CPU (plus `--set` overrides): the
    finished subprocess. Rank variables of an outer launcher are dropped, so the kit starts its own ranks."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": repo}
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT"):
        env.pop(key, None)
    sets = ["train.accelerator=cpu", "train.devices=2", "train.strategy=ddp", *overrides]
    argv = [sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir", str(run_dir)]
    return subprocess.run([*argv, *(arg for value in sets for arg in ("--set", value))],
                          env=env, capture_output=True, text=True, timeout=timeout)


def write_train_config(folder, manifest, name="tiny.yaml"):
    """A tiny-model experiment YAML over `manifest`'s shards (64 px, 2 epochs, test_resnet) in `folder`."""
    path = folder / name
    path.write_text(TRAIN_CONFIG.format(shards=manifest.root))
    return path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tfrecord_manifest):
    """(config path, run dir, CVResult) of an uninterrupted in-process `run_cv` on the TFRecord test shards."""
    from kitpkg.config import load_config
    from kitpkg.train.cv import run_cv

    folder = tmp_path_factory.mktemp("finished_run")
    config_path = write_train_config(folder, tfrecord_manifest)
    run_dir = folder / "run"
    result = run_cv(load_config(config_path), run_dir)
    return config_path, run_dir, result


@pytest.fixture
def fold_datamodule():
    """Build the ShardDataModule `kitpkg cv` trains fold k of a config on (cv.make_datamodule of the fold's recipe)."""
    def build(config, fold):
        from kitpkg.train.cv import make_datamodule
        from kitpkg.train.inputs import load_inputs
        from kitpkg.train.recipe import build_recipe

        data = load_inputs(config)
        return make_datamodule(build_recipe(config, data, fold), data)
    return build
