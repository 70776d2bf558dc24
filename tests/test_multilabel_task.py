"""train.task multilabel: several 0/1 label columns, one sigmoid output and BCE each, scored by the mean AUC."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kitpkg.config import load_config
from kitpkg.errors import KitError
from kitpkg.predictions import prediction_frame, read_predictions
from kitpkg.task import make_task
from kitpkg.train.cv import run_cv
from kitpkg.train.losses import make_loss

from tiny_tables import noise_shards, tiny_config

LABELS = ["cat", "dog", "bird"]
ROWS = [{"image_name": f"img{i:03d}", "cat": int(i % 2 == 0), "dog": int(i % 3 == 0), "bird": int(i % 5 < 2),
         "site": ["a", "b", "c"][i % 3]} for i in range(48)]
TEST = [{"image_name": f"tst{i:03d}", "site": "a"} for i in range(4)]


def test_each_label_is_its_own_bce():
    task = make_task("multilabel", 3, LABELS)
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert make_loss("auto", task)(logits, target) == pytest.approx(reference.item())


def test_files_name_a_target_and_a_prediction_column_per_label():
    task = make_task("multilabel", 3, LABELS)
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4]])
    frame = prediction_frame(task, ["a", "b"], probs, fold=0, target=np.array([[1, 0, 1], [0, 1, 0]]))
    assert list(frame.columns) == ["id", "fold", "target_cat", "target_dog", "target_bird", "pred_cat", "pred_dog",
                                   "pred_bird"]
    read = read_predictions(frame, task)
    assert np.array_equal(read.pred, probs) and read.target.tolist() == [[1, 0, 1], [0, 1, 0]]
    assert read.score(task) == pytest.approx(1.0)  # every label's positive above its negative


@pytest.mark.slow
def test_several_0_1_columns_train_as_multilabel(tmp_path, capsys):
    shards = noise_shards(tmp_path, ROWS, label_col=",".join(LABELS), test_rows=TEST)[32].root
    path = tiny_config(tmp_path, shards, train={"epochs": 1})
    result = run_cv(load_config(path), tmp_path / "run")
    assert "train.task auto -> multilabel: the label columns cat, dog, bird are all 0/1" in capsys.readouterr().out
    assert result.metric == "mean_auc"
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", *[f"target_{c}" for c in LABELS], *[f"pred_{c}" for c in LABELS]]
    truth = {r["image_name"]: r for r in ROWS}
    for c in LABELS:
        assert oof[f"target_{c}"].tolist() == [truth[i][c] for i in oof["id"]]
        assert oof[f"pred_{c}"].between(0, 1).all()
    sklearn = pytest.importorskip("sklearn.metrics")
    for k, part in oof.groupby("fold"):
        expected = np.mean([sklearn.roc_auc_score(part[f"target_{c}"], part[f"pred_{c}"]) for c in LABELS])
        assert result.scores[k] == pytest.approx(expected, rel=1e-6)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["task"]["kind"] == "multilabel"
    sub = pd.read_csv(result.submission_path)
    assert list(sub.columns) == ["image_name", *LABELS]
    with pytest.raises(KitError, match="train.mixup: makes no sense for a multilabel task"):
        run_cv(load_config(path, overrides=["train.mixup={mixup_alpha: 0.4}"]), tmp_path / "run2")
