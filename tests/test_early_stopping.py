"""train.early_stopping: a fold stops after `patience` validations without improvement of train.monitor, and the
stopper's count rides in the fold's checkpoints (a resumed fold keeps counting)."""
from __future__ import annotations

import pandas as pd
import pytest

from kitpkg.config import config_from_dict, load_config
from kitpkg.train.stopping import early_stopping

from conftest import write_train_config


def test_off_by_default_and_on_the_monitor():
    config = config_from_dict({"data": {"shards": "x"}})
    assert early_stopping(config, "val_auc", "max") == []
    config = config_from_dict({"data": {"shards": "x"},
                               "train": {"early_stopping": {"patience": 4, "min_delta": 0.01}}})
    (stopper,) = early_stopping(config, "val_loss", "min")
    assert (stopper.monitor, stopper.patience, stopper.min_delta, stopper.mode) == ("val_loss", 4, -0.01, "min")


@pytest.mark.slow
def test_fold_stops_after_patience_epochs_without_improvement(tfrecord_manifest, tmp_path, monkeypatch):
    from kitpkg.train import cv
    from kitpkg.train.checkpoint import latest_intact, load_checkpoint
    from kitpkg.train.cv import run_cv

    # a finished fold keeps only best.ckpt (budget.keep_prediction_weights); the last one holds the stopping state
    monkeypatch.setattr(cv, "keep_prediction_weights", lambda folder: None)

    # min_delta 10: no epoch after the first can improve val_loss enough -> epoch 0 best, epochs 1-2 count, stop
    config = load_config(write_train_config(tmp_path, tfrecord_manifest), overrides=[
        "train.epochs=6", "train.monitor=val_loss", "data.folds=[0]",
        "train.early_stopping={patience: 2, min_delta: 10}"])
    run_cv(config, tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "fold0" / "metrics.csv")
    assert list(history["epoch"]) == [0, 1, 2]
    last = load_checkpoint(latest_intact(tmp_path / "run" / "fold0" / "ckpt"))
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping")]
    assert state["wait_count"] == 2 and state["stopped_epoch"] == 2
