"""The Task (kitpkg/task.py) and its prediction files (kitpkg/predictions.py): one home for what a run predicts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kitpkg.config import config_from_dict, config_hash, result_dict
from kitpkg.errors import KitError
from kitpkg.predictions import (prediction_columns, prediction_frame, probability_columns, read_predictions,
                                read_truth, score)
from kitpkg.tables import read_csv, write_csv
from kitpkg.task import Task, choose_task, make_task, task_of_outputs

BASE = {"data": {"shards": "x"}}


def test_the_new_keys_leave_existing_config_hashes_alone_until_set():
    plain = config_from_dict(BASE)
    auto = config_from_dict({**BASE, "train": {"task": "auto", "metric": "auto"}})
    assert config_hash(auto) == config_hash(plain) and "train.task" not in result_dict(plain)
    assert config_hash(config_from_dict({**BASE, "train": {"task": "binary"}})) != config_hash(plain)
    with pytest.raises(KitError, match="train.task"):
        config_from_dict({**BASE, "train": {"task": "regresion"}})
    with pytest.raises(KitError, match="train.metric"):
        config_from_dict({**BASE, "train": {"metric": "f2"}})


def test_auto_chooses_binary_for_one_output_and_multiclass_for_classes():
    binary = choose_task("auto", "auto", 1, ["target"], None, None, None)
    assert (binary.kind, binary.outputs, binary.metric, binary.monitor()) == ("binary", 1, "auc", ("val_auc", "max"))
    multi = choose_task("auto", "auto", 4, ["diagnosis"], ["a", "b", "c", "d"], None, None)
    assert (multi.kind, multi.metric, multi.scoring.key, multi.classes) == ("multiclass", "accuracy", "val_acc",
                                                                           ("a", "b", "c", "d"))
    assert multi.monitor("val_loss") == ("val_loss", "min")
    one = choose_task("auto", "auto", 4, ["diagnosis"], ["a", "b", "c", "d"], "b", 1)
    assert (one.kind, one.scored_kind, one.metric, one.score_index) == ("multiclass", "binary", "auc", 1)
    with pytest.raises(KitError, match=r"train.task: binary needs one output .* here 4"):
        choose_task("binary", "auto", 4, ["diagnosis"], None, None, None)
    # the registry (kitpkg/metrics.py) says what scores one class of many: its probability, not a regression's error
    with pytest.raises(KitError, match=r"train.metric: rmse does not score a score_class task"):
        choose_task("auto", "rmse", 4, ["diagnosis"], None, "b", 1)


def test_a_task_record_round_trips_and_an_unknown_kind_is_refused():
    task = make_task("multiclass", 3, ["label"], ["x", "y", "z"], "z", 2)
    assert Task.from_record(task.record()) == task
    assert task.scored() == Task(kind="binary", outputs=1, labels=("label",), metric="auc")
    with pytest.raises(KitError, match="task kind 'hologram' is not one this kitpkg knows"):
        Task.from_record({**task.record(), "kind": "hologram"})


def _round_trip(tmp_path, frame):
    write_csv(frame, tmp_path / "p.csv")
    return read_csv(tmp_path / "p.csv")


def test_binary_prediction_files_hold_target_and_the_positive_probability(tmp_path):
    task = task_of_outputs(1)
    probs = np.array([[0.9], [0.2], [0.6]])
    frame = _round_trip(tmp_path, prediction_frame(task, ["a", "b", "c"], probs, fold=1, target=[1.0, 0.0, 0.0]))
    assert list(frame.columns) == ["id", "fold", "target", "prediction"] == ["id", "fold", "target",
                                                                             *prediction_columns(task)]
    read = read_predictions(frame, task)
    assert read.ids.tolist() == ["a", "b", "c"] and read.fold.tolist() == [1, 1, 1]
    assert read.pred.tolist() == [0.9, 0.2, 0.6] and read.target.tolist() == [1, 0, 0]
    assert read.score(task) == pytest.approx(1.0)  # the positive scores above both negatives


def test_multiclass_files_hold_the_argmax_and_every_class_probability(tmp_path):
    task = task_of_outputs(3)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    frame = _round_trip(tmp_path, prediction_frame(task, ["a", "b", "c"], probs, fold=0, target=[0, 1, 1]))
    assert list(frame.columns) == ["id", "fold", "target", "prediction", "prob_0", "prob_1", "prob_2"]
    read = read_predictions(frame, task)
    assert read.labels.tolist() == [0, 2, 1] and np.array_equal(read.pred, probs)
    assert read.score(task) == pytest.approx(2 / 3)  # b is given 2, its target is 1
    test = _round_trip(tmp_path, prediction_frame(task, ["t1"], probs[:1]))
    assert list(test.columns) == ["id", "prediction", "prob_0", "prob_1", "prob_2"]
    assert read_predictions(test, task).target is None


def test_one_scored_class_reads_as_binary_with_every_class_kept(tmp_path):
    task = task_of_outputs(3, "2", 2)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    frame = _round_trip(tmp_path, prediction_frame(task, ["a", "b"], probs, fold=0, target=[0, 1]))
    assert list(frame.columns) == ["id", "fold", "target", "prediction", "prob_0", "prob_1", "prob_2"]
    assert prediction_columns(task) == ["prediction"] and probability_columns(task) == ["prob_0", "prob_1", "prob_2"]
    read = read_predictions(frame, task)
    assert read.pred.tolist() == [0.1, 0.6] and read.labels is None and np.array_equal(read.class_probs, probs)
    truth = read_truth(frame, task)
    assert truth.target.tolist() == [0.0, 1.0] and truth.fold.tolist() == [0, 0]


def test_scores_match_a_reference_implementation():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    target, pred = rng.integers(0, 2, 50), rng.random(50)
    assert score(task_of_outputs(1), target, pred) == pytest.approx(sklearn.roc_auc_score(target, pred))
    classes, probs = rng.integers(0, 4, 50), rng.random((50, 4))
    assert score(task_of_outputs(4), classes, probs) == pytest.approx(
        sklearn.accuracy_score(classes, probs.argmax(1)))
    assert np.isnan(score(task_of_outputs(1), np.ones(5), rng.random(5)))  # one class: no AUC


def test_a_missing_column_of_an_oof_file_is_named():
    with pytest.raises(KeyError, match="fold"):
        read_truth(pd.DataFrame({"id": ["a"], "target": [1]}), task_of_outputs(1))
