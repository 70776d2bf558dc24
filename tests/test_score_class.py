"""train.score_class: train on a multi-class label, score (AUC), predict and submit one class's probability."""
from __future__ import annotations

import pandas as pd
import pytest

from kitpkg.config import config_from_dict, config_hash, load_config
from kitpkg.errors import KitError
from kitpkg.task import task_of_outputs
from kitpkg.train.cv import run_cv
from kitpkg.train.predict import oof_rows
from kitpkg.train.scoring import score_class_index

from tiny_tables import noise_shards, tiny_config

CLASSES = ["melanoma", "nevus", "other", "seborrheic_keratosis"]


def test_names_and_indices_resolve_and_unknown_names_list_the_classes():
    assert score_class_index("melanoma", CLASSES, 4, "shards") == 0
    assert score_class_index(2, CLASSES, 4, "shards") == 2
    assert score_class_index(None, CLASSES, 4, "shards") is None
    with pytest.raises(KitError, match=r"train.score_class: 'melanom' is not a class of shards \(classes: melanoma, "
                                       r"nevus, other, seborrheic_keratosis\)"):
        score_class_index("melanom", CLASSES, 4, "shards")
    with pytest.raises(KitError, match="needs a multi-class target"):
        score_class_index("melanoma", ["benign", "malignant"], 1, "shards")
    base = {"data": {"shards": "x"}}
    assert config_hash(config_from_dict({**base, "train": {"score_class": "melanoma"}})) != \
        config_hash(config_from_dict(base))


def test_oof_rows_score_one_class():
    frame = pd.DataFrame({"id": ["a", "b"], "target": [0, 2], "s0": [0.7, 0.1], "s1": [0.2, 0.1], "s2": [0.1, 0.8]})
    rows = oof_rows(frame, 0, task_of_outputs(3, 2, 2), space="prob")
    assert rows["target"].tolist() == [0, 1] and rows["prediction"].tolist() == [0.1, 0.8]
    assert rows["prob_0"].tolist() == [0.7, 0.1]


@pytest.mark.slow
def test_multi_class_run_scores_and_submits_one_class(tmp_path):
    rows = [{"image_name": f"img{i:03d}", "diagnosis": CLASSES[i % 4], "sex": ["male", "female"][i % 4 == 0]}
            for i in range(64)]
    test_rows = [{"image_name": f"tst{i:03d}", "sex": "male"} for i in range(6)]
    shards = noise_shards(tmp_path, rows, label_col="diagnosis", test_rows=test_rows)[32].root
    path = tiny_config(tmp_path, shards, data={"folds": [0]}, model={"meta": ["sex"]},
                       train={"score_class": "melanoma", "epochs": 1}, output={"pred_col": "target"})
    result = run_cv(load_config(path), tmp_path / "run")
    assert result.metric == "auc" and result.oof_score > 0.9, result.summary()  # melanoma = the only female rows
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    truth = {r["image_name"]: int(r["diagnosis"] == "melanoma") for r in rows}
    assert oof["target"].tolist() == [truth[i] for i in oof["id"]]
    assert (oof["prediction"] - oof["prob_0"]).abs().max() == 0  # melanoma is class 0 of the sorted names
    sub = pd.read_csv(result.submission_path)
    predictions = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    assert list(sub.columns) == ["image_name", "target"]
    assert (sub["target"] - predictions["prob_0"]).abs().max() < 1e-6
    with pytest.raises(KitError, match=r"train.score_class: 'melanom' is not a class of .*classes: melanoma, nevus"):
        run_cv(load_config(path, overrides=["train.score_class=melanom"]), tmp_path / "run2")


@pytest.mark.slow
def test_score_class_under_ddp_scores_every_sample_once(tmp_path):
    """train.score_class with 2-process DDP: the scored class's AUC from every validation sample exactly once."""
    from conftest import run_ddp_cv

    rows = [{"image_name": f"img{i:03d}", "diagnosis": CLASSES[i % 4], "sex": ["male", "female"][i % 4 == 0]}
            for i in range(64)]
    shards = noise_shards(tmp_path, rows, label_col="diagnosis")[32].root
    path = tiny_config(tmp_path, shards, data={"folds": [0]}, model={"meta": ["sex"]},
                       train={"score_class": "melanoma", "epochs": 1})
    proc = run_ddp_cv(path, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CV auc" in proc.stdout
    oof = pd.read_csv(tmp_path / "run" / "oof.csv", dtype={"id": str})
    assert oof["id"].is_unique and set(oof["target"]) <= {0, 1} and (oof["prediction"] - oof["prob_0"]).abs().max() == 0
