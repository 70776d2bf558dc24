"""train.task regression: float targets, standardised on the fold's training rows, predicted back in the CSV's units."""
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
from kitpkg.train.checkpoint import load_checkpoint
from kitpkg.train.cv import run_cv
from kitpkg.train.losses import make_loss

from tiny_tables import noise_shards, tiny_config

ROWS = [{"image_name": f"img{i:03d}", "size": round(1000 + 37.5 * np.sin(i) + 0.25, 3)} for i in range(40)]
TEST = [{"image_name": f"tst{i:03d}"} for i in range(4)]


def test_value_losses_are_torch_s_own_and_classification_losses_are_refused():
    task = make_task("regression", 2, ["a", "b"])
    out, target = torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    assert make_loss("auto", task)(out, target) == pytest.approx(torch.nn.functional.mse_loss(out, target).item())
    assert make_loss("l1", task)(out, target) == pytest.approx(torch.nn.functional.l1_loss(out, target).item())
    assert make_loss("smooth_l1", task)(out, target) == pytest.approx(
        torch.nn.functional.smooth_l1_loss(out, target).item())
    with pytest.raises(KitError, match=r"train.loss: 'bce' does not train a regression task; use auto or one of mse"):
        make_loss("bce", task)


def test_several_value_columns_are_named_by_their_labels():
    task = make_task("regression", 2, ["width", "height"])
    frame = prediction_frame(task, ["a"], np.array([[1.5, 2.5]]), fold=0, target=np.array([[1.0, 3.0]]))
    assert list(frame.columns) == ["id", "fold", "target_width", "target_height", "pred_width", "pred_height"]
    read = read_predictions(frame, task)
    assert read.pred.tolist() == [[1.5, 2.5]] and read.target.tolist() == [[1.0, 3.0]]
    assert read.score(task) == pytest.approx(np.sqrt((0.5**2 + 0.5**2) / 2))  # rmse over every value


@pytest.fixture(scope="module")
def regression_shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regression")
    return folder, noise_shards(folder, ROWS, label_col="size", test_rows=TEST)[32].root


@pytest.mark.slow
def test_a_float_column_trains_as_regression_in_the_csv_s_units(regression_shards, capsys):
    folder, shards = regression_shards
    path = tiny_config(folder, shards, train={"epochs": 1}, output={"pred_col": "size"})
    result = run_cv(load_config(path), folder / "run")
    assert "train.task auto -> regression: the label column size holds fractional floats" in capsys.readouterr().out
    assert result.metric == "rmse"
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", "target", "prediction"]
    truth = {r["image_name"]: r["size"] for r in ROWS}
    assert np.allclose(oof["target"], [truth[i] for i in oof["id"]])
    spread = np.std(list(truth.values()))
    assert abs(oof["prediction"].mean() - 1000) < 3 * spread  # back in the CSV's units (trained near 0)
    for k, part in oof.groupby("fold"):
        assert result.scores[k] == pytest.approx(np.sqrt(np.mean((part["prediction"] - part["target"]) ** 2)),
                                                 rel=1e-6)
        trained_on = [r["size"] for r in ROWS if r["image_name"] not in set(part["id"])]
        weights = load_checkpoint(folder / "run" / f"fold{k}" / "ckpt" / "best.ckpt")["state_dict"]
        assert weights["target_mean"].item() == pytest.approx(np.mean(trained_on), rel=1e-6)
        assert weights["target_std"].item() == pytest.approx(np.std(trained_on), rel=1e-5)
    state = json.loads((folder / "run" / "state.json").read_text())
    assert state["task"]["kind"] == "regression" and state["task"]["labels"] == ["size"]
    sub = pd.read_csv(result.submission_path)
    assert list(sub.columns) == ["image_name", "size"] and abs(sub["size"].mean() - 1000) < 3 * spread


@pytest.mark.parametrize("setting, key", [("train.mixup={mixup_alpha: 0.4}", "train.mixup"),
                                          ("train.label_smoothing=0.1", "train.label_smoothing"),
                                          ("train.score_class=1", "train.score_class"),
                                          ("train.loss=ce", "train.loss")])
def test_class_settings_are_refused_by_name(regression_shards, setting, key):
    folder, shards = regression_shards
    config = load_config(tiny_config(folder, shards, name="refused"), overrides=[setting])
    with pytest.raises(KitError, match=key):
        run_cv(config, folder / "refused_run")
    assert not (folder / "refused_run" / "state.json").exists()


@pytest.mark.parametrize("metric", ["rmse", "mae"])
def test_several_target_columns_are_scored_from_their_prediction_file(tmp_path, metric):
    from kitpkg.tables import read_csv, write_csv

    rng = np.random.default_rng(3)
    target, pred = rng.normal(50, 10, (40, 2)), rng.normal(50, 10, (40, 2))
    task = make_task("regression", 2, labels=("a", "b"), metric=metric)
    write_csv(prediction_frame(task, [f"s{i}" for i in range(40)], pred, fold=0, target=target), tmp_path / "oof.csv")
    read = read_predictions(read_csv(tmp_path / "oof.csv"), task)  # a DataFrame's (N, 2) values: Fortran-ordered
    error = read.pred - read.target
    expected = np.sqrt((error ** 2).mean()) if metric == "rmse" else np.abs(error).mean()
    assert read.score(task) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_two_float_columns_train_as_one_regression_and_are_scored_over_both(tmp_path, capsys):
    rows = [{"image_name": f"img{i:03d}", "width": round(10 + np.sin(i), 3) + 0.25,
             "height": round(500 + 20 * np.cos(i), 3) + 0.5} for i in range(40)]
    shards = noise_shards(tmp_path, rows, label_col="width,height", test_rows=TEST)[32].root
    result = run_cv(load_config(tiny_config(tmp_path, shards, train={"epochs": 1})), tmp_path / "run")
    assert "train.task auto -> regression" in capsys.readouterr().out and result.metric == "rmse"
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", "target_width", "target_height", "pred_width", "pred_height"]
    for k, part in oof.groupby("fold"):
        error = part[["pred_width", "pred_height"]].to_numpy() - part[["target_width", "target_height"]].to_numpy()
        assert result.scores[k] == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-6)
    assert abs(oof["pred_height"].mean() - 500) < 60, "each column back in its own units"
    assert list(pd.read_csv(result.submission_path).columns) == ["image_name", "width", "height"]
