"""The run report: report.md + PNGs that exist and open; ROC/AUC helpers; the LR finder writes its curve and
suggestion (and optim.lr into the YAML on request)."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from kitpkg.config import load_config
from kitpkg.metrics import auc, roc_curve
from kitpkg.train.report import write_report


def test_auc_matches_the_rank_statistic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounded: many ties
    pos, neg = s[y == 1], s[y == 0]
    mann_whitney = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg))
    assert auc(y, s) == pytest.approx(mann_whitney)
    fpr, tpr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.isnan(auc(np.ones(5), np.arange(5)))


@pytest.mark.slow
def test_report_files_exist_and_open(finished_run):
    _, run_dir, result = finished_run
    text = result.report_path.read_text()
    assert "| fold |" in text and "mean ± std" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"scores.png", "roc.png", "curves.png"} <= set(images)
    for name in images:
        with Image.open(run_dir / name) as img:
            img.verify()


@pytest.mark.slow
def test_lr_find_writes_curve_suggestion_and_config(finished_run, tmp_path):
    config_path, run_dir, _ = finished_run
    from kitpkg.train.lr_find import run_lr_find

    yaml_path = tmp_path / "exp.yaml"
    shutil.copy(config_path, yaml_path)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.ckpt"))
    result = run_lr_find(load_config(yaml_path), copy, num_training=20, write_config=True)
    assert len(result["lr"]) == len(result["loss"]) > 5 and result["suggestion"] > 0
    with Image.open(copy / "lr_find.png") as img:
        img.verify()
    assert yaml.safe_load(yaml_path.read_text())["optim"]["lr"] == pytest.approx(result["suggestion"], rel=1e-2)
    assert "lr_find.png" in write_report(copy).read_text()


def test_training_curves_put_whole_epochs_on_the_x_axis():
    """A 2-epoch fold's curves are ticked 0, 1 — never 0.25, 0.5 … (matplotlib's default for a short axis)."""
    import pandas as pd

    from kitpkg.train.report import curves_figure

    history = pd.DataFrame({"epoch": [0, 1], "train_loss": [0.7, 0.6], "val_loss": [0.69, 0.65], "val_auc": [0.6, 0.7]})
    fig = curves_figure({0: history})
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


@pytest.mark.slow
def test_each_fold_records_its_last_epoch_score_beside_the_picked_one(finished_run):
    """last_score: the validation metric of the fold's last epoch in metrics.csv; best_val_score: the same metric at
    the picked epoch; the CV summary and state.json carry their means (kitpkg runs shows last_mean)."""
    import json

    import pandas as pd

    _, run_dir, result = finished_run
    state = json.loads((run_dir / "state.json").read_text())
    lasts = []
    for k in state["cv"]["folds"]:
        record = json.loads((run_dir / "folds" / f"fold{k}.json").read_text())
        history = pd.read_csv(run_dir / f"fold{k}" / "metrics.csv")
        assert record["last_score"] == pytest.approx(history["val_auc"].iloc[-1])
        picked = history.loc[history["epoch"] == record["best_epoch"], "val_auc"].iloc[0]
        assert record["best_val_score"] == pytest.approx(picked) and picked >= history["val_auc"].max() - 1e-12
        lasts.append(record["last_score"])
    assert state["cv"]["last_mean"] == pytest.approx(np.mean(lasts)) == result.last_mean
    assert f"last epochs: {np.mean(lasts):.4f}" in result.summary()
