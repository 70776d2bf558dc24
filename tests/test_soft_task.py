"""train.task soft: a target distribution over several columns, softmax outputs, KL divergence (or soft CE)."""
from __future__ import annotations

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

VOTES = ["seizure", "lpd", "other"]
ROWS = [{"image_name": f"img{i:03d}", **dict(zip(VOTES, np.round(np.roll([0.6, 0.3, 0.1], i % 3), 3).tolist()))}
        for i in range(36)]
TEST = [{"image_name": f"tst{i:03d}"} for i in range(4)]


def _kl(target, pred):
    t, q = np.asarray(target, float), np.asarray(pred, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(t > 0, t * np.log(t / q), 0.0).sum(1).mean())


def test_kl_and_soft_cross_entropy_against_the_distribution():
    task = make_task("soft", 3, VOTES)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 0.5]])
    target = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.2, 0.6]])
    p = logits.softmax(-1).numpy()
    assert make_loss("auto", task)(logits, target).item() == pytest.approx(_kl(target.numpy(), p), rel=1e-5)
    cross = -(target.numpy() * np.log(p)).sum(1).mean()
    assert make_loss("soft_ce", task)(logits, target).item() == pytest.approx(cross, rel=1e-5)
    with pytest.raises(KitError, match="train.loss: 'ce' does not train a soft task"):
        make_loss("ce", task)


def test_files_hold_the_distribution_and_the_probabilities_per_column():
    task = make_task("soft", 3, VOTES)
    probs = np.array([[0.5, 0.3, 0.2]])
    frame = prediction_frame(task, ["a"], probs, fold=1, target=np.array([[0.6, 0.3, 0.1]]))
    assert list(frame.columns) == ["id", "fold", *[f"target_{c}" for c in VOTES], *[f"pred_{c}" for c in VOTES]]
    read = read_predictions(frame, task)
    assert read.score(task) == pytest.approx(_kl([[0.6, 0.3, 0.1]], probs))


@pytest.mark.slow
def test_vote_columns_train_as_a_soft_task(tmp_path):
    shards = noise_shards(tmp_path, ROWS, label_col=",".join(VOTES), test_rows=TEST)[32].root
    path = tiny_config(tmp_path, shards, train={"epochs": 1, "task": "soft"})
    result = run_cv(load_config(path), tmp_path / "run")
    assert result.metric == "kl"
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    preds = oof[[f"pred_{c}" for c in VOTES]].to_numpy()
    assert np.allclose(preds.sum(1), 1.0)
    truth = {r["image_name"]: [r[c] for c in VOTES] for r in ROWS}
    assert np.allclose(oof[[f"target_{c}" for c in VOTES]].to_numpy(), [truth[i] for i in oof["id"]])
    for k, part in oof.groupby("fold"):
        target = part[[f"target_{c}" for c in VOTES]].to_numpy()
        assert result.scores[k] == pytest.approx(_kl(target, part[[f"pred_{c}" for c in VOTES]]), rel=1e-6)
    assert list(pd.read_csv(result.submission_path).columns) == ["image_name", *VOTES]
    with pytest.raises(KitError, match="train.mixup: makes no sense for a soft task"):
        run_cv(load_config(path, overrides=["train.mixup={mixup_alpha: 0.4}"]), tmp_path / "run2")
