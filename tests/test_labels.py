"""Labels as the user's CSV has them: text classes (benign/malignant, 6 diagnoses), 0.0/1.0 floats, 0/1 ints."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import SHARD_SIZE, write_train_config
from kitpkg.config import load_config
from kitpkg.data.dataset import ShardDataset
from kitpkg.shards.convert import convert
from kitpkg.shards.manifest import Manifest
from kitpkg.train import cv
from kitpkg.train.inputs import infer_classes, load_inputs


def _convert(demo_source, out, fmt="tfrecord", csv=None, label_col="target"):
    return convert(demo_source.images, csv or demo_source.train_csv, out, fmt=fmt, sizes=(SHARD_SIZE,), folds=3,
                   label_col=label_col, test_csv=demo_source.test_csv, shard_samples=8, workers=1,
                   progress=False)[SHARD_SIZE]


def _targets(manifest, split="train", fold=0):
    ds = ShardDataset(manifest, split, fold, batch_size=64, image_size=SHARD_SIZE, training=False)
    return {i: t for batch in ds for i, t in zip(batch["id"], batch["target"].tolist())}


def _csv_labels(demo_source, col):
    frame = pd.read_csv(demo_source.train_csv, dtype={"image_name": str})
    return dict(zip(frame["image_name"], frame[col]))


@pytest.mark.parametrize("fmt", ["tfrecord", "wds"])
def test_text_labels_become_class_indices_in_sorted_order(demo_source, tmp_path, fmt):
    manifest = _convert(demo_source, tmp_path / fmt, fmt, label_col="diagnosis")
    names = manifest.classes()
    assert names == sorted(set(_csv_labels(demo_source, "diagnosis").values()))
    truth = _csv_labels(demo_source, "diagnosis")
    got = _targets(manifest)
    assert got and all(names[t] == truth[i] for i, t in got.items()), "each target is the index of its class"
    assert infer_classes(manifest) == len(names) > 2


@pytest.mark.parametrize("fmt", ["tfrecord", "wds"])
def test_benign_malignant_is_binary_with_malignant_positive(demo_source, tmp_path, fmt):
    manifest = _convert(demo_source, tmp_path / fmt, fmt, label_col="benign_malignant")
    assert manifest.classes() == ["benign", "malignant"] and infer_classes(manifest) == 1
    truth = _csv_labels(demo_source, "benign_malignant")
    got = _targets(manifest)
    assert got and got == {i: int(truth[i] == "malignant") for i in got}


@pytest.mark.parametrize("names, positive", [(["benign", "malignant"], "malignant"), (["no", "yes"], "yes"),
                                             (["False", "True"], "True"), (["negative", "positive"], "positive"),
                                             (["abnormal", "normal"], "abnormal"), (["cat", "dog"], "dog")])
def test_the_positive_of_two_text_classes(names, positive):
    m = Manifest("tfrecord", {"image": "bytes", "y": "bytes"}, [], label_col="y",
                 class_counts={n: 1 for n in reversed(names)})
    assert m.classes()[1] == positive and len(m.classes()) == 2


def test_float_zero_one_labels_are_binary_scored_by_auc(demo_source, tmp_path):
    frame = pd.read_csv(demo_source.train_csv, dtype={"image_name": str})
    frame["target"] = frame["target"].astype(float)
    csv = tmp_path / "train_float.csv"
    frame.to_csv(csv, index=False)
    assert "0.0" in csv.read_text()
    manifest = _convert(demo_source, tmp_path / "out", csv=csv)
    assert manifest.schema["target"] == "float" and manifest.classes() is None
    assert infer_classes(manifest) == 1
    config = load_config(write_train_config(tmp_path, manifest))
    assert load_inputs(config).task.monitor(config.train.monitor)[0] == "val_auc"
    truth = _csv_labels(demo_source, "target")
    got = _targets(manifest)
    assert got and got == {i: float(truth[i]) for i in got}


@pytest.mark.slow
def test_cv_trains_benign_malignant_as_binary_with_auc_and_a_competition_submission(demo_source, tmp_path):
    manifest = _convert(demo_source, tmp_path / "shards", label_col="benign_malignant")
    config = load_config(write_train_config(tmp_path, manifest), overrides=["data.folds=[0]", "train.epochs=1"])
    data = load_inputs(config)
    assert data.task.kind == "binary" and data.task.metric == "auc"
    result = cv.run_cv(config, tmp_path / "run")  # died with "IndexError: Target -1 is out of bounds"
    assert result.metric == "auc" and 0.0 <= result.scores[0] <= 1.0
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    truth = _csv_labels(demo_source, "benign_malignant")
    assert list(oof["target"]) == [float(truth[i] == "malignant") for i in oof["id"]]
    sub = pd.read_csv(result.submission_path, dtype={"image_name": str})
    assert list(sub.columns) == ["image_name", "target"] and sub["target"].between(0, 1).all()
    assert list(sub["image_name"]) == [i for s in manifest.select("test") for i in s.ids]
