"""A validation fold of one class has no AUC: it scores NaN (stored as null, one warning naming the fold), keeps its
last epoch as best, never triggers early stopping, and is left out of the CV mean with a note; each fold's
last-epoch score sits beside its best-epoch score, so the CV summary shows what picking the epoch adds."""
from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from kitpkg.config import config_from_dict, load_config
from kitpkg.rundir import FoldRecord
from kitpkg.task import task_of_outputs
from kitpkg.train.runstate import RunState


def test_the_validation_auc_of_one_class_is_nan_without_warnings():
    from tiny_module import module_of

    config = config_from_dict({"data": {"shards": "x"}, "model": {"name": "test_resnet"}})
    metric = module_of(config, 1).val_metric
    metric.update(torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0, 0, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(float(metric.compute()))
    metric.reset()
    metric.update(torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0, 1, 0]))
    assert float(metric.compute()) == 1.0


def _validations(stopper, scores):
    """Feed `scores` to an EarlyStopping as successive validations; return the epoch it stopped at (None: never)."""
    from pytorch_lightning.trainer.states import TrainerFn

    trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=False, fast_dev_run=False,
                              should_stop=False, current_epoch=0, global_step=0, is_global_zero=True,
                              strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision))
    for epoch, score in enumerate(scores):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val_auc": torch.tensor(score)}
        stopper.on_validation_end(trainer, None)
        if trainer.should_stop:
            return epoch
    return None


def test_early_stopping_ignores_an_undefined_score_and_still_stops_on_real_ones():
    from kitpkg.train.stopping import early_stopping

    config = config_from_dict({"data": {"shards": "x"}, "train": {"early_stopping": {"patience": 2}}})
    (stopper,) = early_stopping(config, "val_auc", "max")
    assert _validations(stopper, [float("nan")] * 6) is None, "a one-class fold trains every epoch"
    (stopper,) = early_stopping(config, "val_auc", "max")
    assert _validations(stopper, [0.8, 0.7, 0.7, 0.6]) == 2


def _run_with_folds(tmp_path, records):
    state = RunState(tmp_path, {"data": {"num_classes": 1}, "config": {}})
    for k, record in records.items():
        state.replace_fold(k, FoldRecord.from_json({"status": "done", **record}))
    return state


def test_a_nan_fold_is_left_out_of_the_cv_mean_with_a_note_and_last_epoch_scores_are_shown(tmp_path):
    from kitpkg.train.results import fold_result

    state = _run_with_folds(tmp_path, {0: {"score": 0.80, "last_score": 0.78, "best_val_score": 0.79},
                                       1: {"score": 0.90, "last_score": 0.84, "best_val_score": 0.89},
                                       2: {"score": None, "last_score": None, "best_val_score": None}})
    result = fold_result(SimpleNamespace(task=task_of_outputs(1)), state, [0, 1, 2])
    assert result.mean == pytest.approx(0.85) and result.std == pytest.approx(0.05)
    assert result.last_mean == pytest.approx(0.81)
    text = result.summary()
    assert "fold 0: auc 0.8000 (last epoch 0.7800)" in text
    assert "fold 2: auc n/a: its validation split holds one class; left out of the mean" in text
    assert "CV auc: 0.8500 ± 0.0500 over 2 of 3 folds" in text
    assert "last epochs: 0.8100" in text and "(there 0.8400: picking adds +0.0300)" in text


def test_the_report_lists_a_nan_fold_and_the_last_epoch_scores(tmp_path):
    from kitpkg.train.report import write_report

    state = _run_with_folds(tmp_path, {0: {"score": 0.80, "last_score": 0.78, "best_epoch": 3},
                                       1: {"score": None, "last_score": None, "best_epoch": 4}})
    state.save()
    text = write_report(tmp_path).read_text()
    assert "| 0 | 0.8000 | 0.7800 | 3 |" in text and "| 1 | n/a (one class) | n/a | 4 |" in text
    assert "**0.8000 ± 0.0000**" in text and "fold 1 left out" in text


@pytest.mark.slow
def test_a_one_class_fold_trains_every_epoch_keeps_its_last_weights_and_records_null(tmp_path):
    from kitpkg.train.cv import run_cv

    from tiny_tables import noise_shards, tiny_config

    rows = [{"image_name": f"img{i:02d}", "target": int(i >= 8 and i % 2 == 0), "fold": int(i >= 8)}
            for i in range(16)]  # fold 0: negatives only
    noise_shards(tmp_path, rows)
    config = load_config(tiny_config(tmp_path, tmp_path / "shards", data={"folds": [0]},
                                     train={"epochs": 3, "early_stopping": {"patience": 1}}))
    with pytest.warns(RuntimeWarning, match=r"fold 0: its validation split holds one class") as caught:
        result = run_cv(config, tmp_path / "run")
    assert [str(w.message) for w in caught if "fold 0" in str(w.message)] == [str(caught[0].message)], "one warning"
    run = tmp_path / "run"
    assert list(pd.read_csv(run / "fold0" / "metrics.csv")["epoch"]) == [0, 1, 2], "no early stop on NaN"
    record = json.loads((run / "folds" / "fold0.json").read_text())
    assert record["score"] is None and record["last_score"] is None and record["best_epoch"] == 2
    from kitpkg.train.checkpoint import load_checkpoint

    assert load_checkpoint(run / "fold0" / "ckpt" / "best.ckpt")["epoch"] == 2, "the last epoch's weights stand as best"
    assert result.mean is None and result.oof_score is None and "left out of the mean" in result.summary()
    assert json.loads((run / "state.json").read_text(), parse_constant=pytest.fail)["cv"]["oof"] is None
