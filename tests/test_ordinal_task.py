"""train.task ordinal: one output regressing the class index, rounded to a class, scored by quadratic kappa."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kitpkg.config import load_config
from kitpkg.errors import KitError
from kitpkg.predictions import prediction_frame, read_predictions
from kitpkg.task import make_task
from kitpkg.thresholds import apply_cuts
from kitpkg.train.cv import run_cv

from tiny_tables import noise_shards, tiny_config

ROWS = [{"image_name": f"img{i:03d}", "grade": i % 4} for i in range(48)]
TEST = [{"image_name": f"tst{i:03d}"} for i in range(4)]


def test_values_round_half_up_to_a_class_within_the_classes():
    task = make_task("ordinal", 1, ["grade"], ["0", "1", "2", "3"])
    values = np.array([[-0.7], [0.5], [1.49], [2.5], [9.0]])
    frame = prediction_frame(task, list("abcde"), values, fold=0, target=[0, 1, 1, 2, 3])
    assert list(frame.columns) == ["id", "fold", "target", "prediction", "prediction_class"]
    assert frame["prediction_class"].tolist() == [0, 1, 1, 3, 3]
    read = read_predictions(frame, task)
    assert read.pred.tolist() == [-0.7, 0.5, 1.49, 2.5, 9.0] and read.target.tolist() == [0, 1, 1, 2, 3]


@pytest.mark.slow
def test_an_integer_grade_column_trains_as_ordinal(tmp_path):
    shards = noise_shards(tmp_path, ROWS, label_col="grade", test_rows=TEST)[32].root
    path = tiny_config(tmp_path, shards, train={"epochs": 1, "task": "ordinal"}, output={"pred_col": "grade"})
    result = run_cv(load_config(path), tmp_path / "run")
    assert result.metric == "qwk"
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    truth = {r["image_name"]: r["grade"] for r in ROWS}
    assert oof["target"].tolist() == [truth[i] for i in oof["id"]]
    assert (oof["prediction_class"] == np.clip(np.floor(oof["prediction"] + 0.5), 0, 3)).all()
    sklearn = pytest.importorskip("sklearn.metrics")
    # qwk decides by cuts fitted on the OOF (train/decisions.py): fold k cut by those fitted on the other folds
    cuts = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    for k, part in oof.groupby("fold"):
        decided = apply_cuts(part["prediction"], cuts["folds"][k]["params"])
        expected = sklearn.cohen_kappa_score(part["target"], decided, weights="quadratic")
        assert result.scores[k] == pytest.approx(expected, rel=1e-6, abs=1e-9) or (np.isnan(expected) and
                                                                                   np.isnan(result.scores[k]))
    sub = pd.read_csv(result.submission_path)
    test = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    assert list(sub.columns) == ["image_name", "grade"]
    assert sub["grade"].tolist() == apply_cuts(test["prediction"], cuts["params"]).tolist()  # cuts fitted on all OOF
    with pytest.raises(KitError, match="train.label_smoothing: makes no sense for a ordinal task"):
        run_cv(load_config(path, overrides=["train.label_smoothing=0.1"]), tmp_path / "run2")
