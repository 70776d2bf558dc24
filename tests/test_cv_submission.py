"""`kitpkg cv` / `kitpkg predict` write the competition's submission (output.sample_submission) and decide labels with
thresholds fitted honestly on the OOF (nested over the folds; the test's fitted on all OOF, in thresholds.json)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pandas as pd
import pytest

from kitpkg.config import load_config, result_dict
from kitpkg.errors import KitError
from kitpkg.metrics import METRICS
from kitpkg.thresholds import apply_cuts, apply_thresholds, fit_cuts, fit_nested, fit_thresholds
from kitpkg.train.cv import predict_test, run_cv

from tiny_tables import noise_shards, tiny_config

TEST = [{"image_name": f"tst{i:03d}"} for i in range(6)]
TEST_IDS = [r["image_name"] for r in TEST]
SHUFFLED = [TEST_IDS[i] for i in (3, 0, 5, 1, 4, 2)]  # a sample's row order, not the test CSV's


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sample(path: Path, id_col: str, columns: Dict[str, object], ids: Sequence[str] = tuple(SHUFFLED)) -> Path:
    """A sample submission as Kaggle's: the ids in its own order, a constant placeholder per column."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([id_col, *columns])
        writer.writerows([[i, *columns.values()] for i in ids])
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _test_frame(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "test_predictions.csv", dtype={"id": str}).set_index("id")


# --- the config key ---------------------------------------------------------------------------------------------------
def test_sample_submission_is_a_path_beside_the_config_out_of_the_hash(tmp_path):
    sample = _sample(tmp_path / "sample_submission.csv", "image_name", {"target": 0})
    path = tiny_config(tmp_path, tmp_path / "shards", output={"sample_submission": "sample_submission.csv"})
    config = load_config(path)
    assert config.output.sample_submission == str(sample.resolve())
    assert result_dict(config) == result_dict(load_config(path, overrides=["output.sample_submission=null"]))
    with pytest.raises(KitError) as err:
        load_config(path, overrides=["output.sample_submission=missing.csv"])
    assert "output.sample_submission" in str(err.value) and "missing.csv" in str(err.value)
    assert "\n" not in str(err.value)


# --- ordinal + qwk: cuts fitted nested over the folds -----------------------------------------------------------------
def _qwk_objective(target: np.ndarray, labels: np.ndarray) -> float:
    return float(METRICS["qwk"].formula(target.astype(int), labels, "ordinal"))


@pytest.mark.slow
def test_ordinal_qwk_cv_is_nested_and_the_submission_uses_cuts_fitted_on_all_oof(tmp_path):
    sklearn = pytest.importorskip("sklearn.metrics")
    rows = [{"image_name": f"img{i:03d}", "grade": i % 4} for i in range(48)]
    shards = noise_shards(tmp_path, rows, label_col="grade", folds=3, test_rows=TEST)[32].root
    _sample(tmp_path / "sample_submission.csv", "image_name", {"grade": 0})
    path = tiny_config(tmp_path, shards, train={"epochs": 1, "task": "ordinal", "metric": "qwk"},
                       output={"sample_submission": "sample_submission.csv"})
    run = tmp_path / "run"
    result = run_cv(load_config(path), run)

    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    pred, target, folds = oof["prediction"].to_numpy(), oof["target"].to_numpy(), oof["fold"].to_numpy()
    fit = lambda p, t: fit_cuts(p, t, 4, _qwk_objective)  # noqa: E731
    nested = fit_nested(pred, target, folds, fit, apply_cuts)
    record = json.loads((run / "thresholds.json").read_text())
    assert record["kind"] == "ordinal_cuts" and record["fitted_on"] == "all OOF"
    assert record["params"] == pytest.approx(nested.params.tolist())
    for entry in record["folds"]:  # fold k's cuts: fitted on the other folds' rows only
        k = entry["fold"]
        others = folds != k
        assert entry["params"] == pytest.approx(fit(pred[others], target[others]).tolist())
    # the CV reported: QWK of fold k's rows cut with fold k's cuts (scikit-learn as the reference)
    for k in sorted(set(folds)):
        held = folds == k
        expected = sklearn.cohen_kappa_score(target[held], apply_cuts(pred[held], record["folds"][k]["params"]),
                                             weights="quadratic")
        assert result.scores[k] == pytest.approx(expected, abs=1e-6)
    in_sample = sklearn.cohen_kappa_score(target, apply_cuts(pred, nested.params), weights="quadratic")
    nested_pooled = sklearn.cohen_kappa_score(target, nested.labels, weights="quadratic")
    assert result.oof_score == pytest.approx(nested_pooled, abs=1e-6)
    assert in_sample > nested_pooled  # the in-sample fit is optimistic; the CV is not it
    assert "fitted on the other folds" in result.summary()
    state = json.loads((run / "state.json").read_text())
    assert state["cv"]["thresholds"] == "thresholds.json" and state["cv"]["mean"] == pytest.approx(result.mean)

    sub = _read(result.submission_path)
    test = _test_frame(run)
    assert list(sub.columns) == ["image_name", "grade"] and sub["image_name"].tolist() == SHUFFLED
    expected = apply_cuts(test.loc[SHUFFLED, "prediction"].to_numpy(), nested.params)
    assert sub["grade"].astype(int).tolist() == expected.tolist()

    before = result.submission_path.read_bytes()  # `kitpkg predict` writes the same file with the run's cuts
    assert predict_test(load_config(path), run) == result.submission_path
    assert result.submission_path.read_bytes() == before


# --- multilabel into Planet's tags ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_multilabel_tags_use_per_label_thresholds_fitted_for_f1(tmp_path):
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    labels = ["clear", "haze", "road"]
    rows = [{"image_name": f"img{i:03d}", **{c: int(rng.uniform() < 0.5) for c in labels}} for i in range(32)]
    shards = noise_shards(tmp_path, rows, label_col=",".join(labels), test_rows=TEST)[32].root
    _sample(tmp_path / "sample_submission.csv", "image_name", {"tags": "clear road"})
    path = tiny_config(tmp_path, shards, train={"epochs": 1}, output={"sample_submission": "sample_submission.csv"})
    run = tmp_path / "run"
    result = run_cv(load_config(path), run)
    assert result.metric == "mean_auc" and result.decisions is None  # the CV stays the metric's, on scores

    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    pred = oof[[f"pred_{c}" for c in labels]].to_numpy()
    target = oof[[f"target_{c}" for c in labels]].to_numpy().astype(int)
    f1 = lambda t, d: float(sklearn.f1_score(t, d, zero_division=0))  # noqa: E731
    expected = fit_thresholds(pred, target, f1, per_label=True)
    record = json.loads((run / "thresholds.json").read_text())
    assert record["objective"] == "f1 per label" and record["params"] == pytest.approx(expected.tolist())
    nested = fit_nested(pred, target, oof["fold"].to_numpy(), lambda p, t: fit_thresholds(p, t, f1, per_label=True),
                        apply_thresholds)
    for entry in record["folds"]:  # fold k's: fitted on the other folds only
        assert entry["params"] == pytest.approx(nested.fold_params[entry["fold"]].tolist())

    sub = _read(result.submission_path)
    test = _test_frame(run).loc[SHUFFLED]
    on = test[[f"pred_{c}" for c in labels]].to_numpy() >= expected
    assert list(sub.columns) == ["image_name", "tags"] and sub["image_name"].tolist() == SHUFFLED
    assert sub["tags"].tolist() == [" ".join(c for c, x in zip(labels, row) if x) for row in on]


# --- multiclass text classes: names (UBC) and one probability per class (Plant Pathology) --------------------------
@pytest.mark.slow
def test_multiclass_text_classes_go_where_each_sample_puts_them(tmp_path):
    classes = ["cat", "dog", "fox"]
    rows = [{"image_name": f"img{i:03d}", "label": classes[i % 3]} for i in range(30)]
    shards = noise_shards(tmp_path, rows, label_col="label", test_rows=TEST)[32].root
    ubc = _sample(tmp_path / "ubc.csv", "id", {"label": "cat"})
    path = tiny_config(tmp_path, shards, train={"epochs": 1}, output={"sample_submission": "ubc.csv"})
    run = tmp_path / "run"
    result = run_cv(load_config(path), run)
    assert not (run / "thresholds.json").exists()  # argmax: nothing fitted
    probs = _test_frame(run).loc[SHUFFLED, [f"prob_{c}" for c in range(3)]].to_numpy()
    sub = _read(result.submission_path)
    assert list(sub.columns) == ["id", "label"] and sub["id"].tolist() == SHUFFLED
    assert sub["label"].tolist() == [classes[c] for c in probs.argmax(1)]

    plant = _sample(tmp_path / "plant.csv", "image_id", {"fox": 0.33, "cat": 0.33, "dog": 0.33})
    out = predict_test(load_config(path, overrides=[f"output.sample_submission={plant}"]), run, tmp_path / "p.csv")
    sub = pd.read_csv(out, dtype={"image_id": str})
    probs = pd.read_csv(tmp_path / "p_predictions.csv", dtype={"id": str}).set_index("id").loc[
        SHUFFLED, [f"prob_{c}" for c in range(3)]].to_numpy()  # predicted again: the test predictions written beside
    assert list(sub.columns) == ["image_id", "fox", "cat", "dog"] and sub["image_id"].tolist() == SHUFFLED
    for column in ("fox", "cat", "dog"):
        assert sub[column].to_numpy() == pytest.approx(probs[:, classes.index(column)], abs=1e-12)

    # refusals: a column that is no class, ids that are not the test's -- one line, nothing written
    for name, columns, ids in (("wolf.csv", {"cat": 0, "dog": 0, "wolf": 0}, SHUFFLED),
                               ("ids.csv", {"label": "cat"}, [*SHUFFLED[:-1], "nope"])):
        bad = _sample(tmp_path / name, "id", columns, ids)
        for call in (lambda c: run_cv(c, tmp_path / "never"), lambda c: predict_test(c, run, tmp_path / "x.csv")):
            with pytest.raises(KitError) as err:
                call(load_config(path, overrides=[f"output.sample_submission={bad}"]))
            assert name in str(err.value) and "\n" not in str(err.value)
            assert ("wolf" if name == "wolf.csv" else "nope") in str(err.value)
        assert not (tmp_path / "never").exists() and not (tmp_path / "x.csv").exists()
    assert ubc.exists()


# --- regression into PetFinder's Id,Pawpularity -----------------------------------------------------------------------
@pytest.mark.slow
def test_regression_values_go_into_the_sample_s_column(tmp_path):
    rows = [{"image_name": f"img{i:03d}", "Pawpularity": 10.5 + 3 * i} for i in range(24)]
    shards = noise_shards(tmp_path, rows, label_col="Pawpularity", test_rows=TEST)[32].root
    _sample(tmp_path / "sample_submission.csv", "Id", {"Pawpularity": 0})
    path = tiny_config(tmp_path, shards, train={"epochs": 1}, output={"sample_submission": "sample_submission.csv"})
    run = tmp_path / "run"
    result = run_cv(load_config(path), run)
    sub = pd.read_csv(result.submission_path, dtype={"Id": str})
    assert list(sub.columns) == ["Id", "Pawpularity"] and sub["Id"].tolist() == SHUFFLED
    assert sub["Pawpularity"].to_numpy() == pytest.approx(_test_frame(run).loc[SHUFFLED, "prediction"].to_numpy(),
                                                          abs=1e-12)



# --- the decisions alone (no training): which metrics get thresholds, and how they are fitted -------------------------
def _binary_oof(n: int = 60, seed: int = 0) -> pd.DataFrame:
    from kitpkg.predictions import prediction_frame
    from kitpkg.task import Task

    rng = np.random.default_rng(seed)
    target = (rng.uniform(size=n) < 0.3).astype(int)
    prob = np.clip(0.25 * target + rng.uniform(0, 0.75, n), 0, 1)  # a weak signal: the best threshold is not 0.5
    task = Task(kind="binary", outputs=1)
    return prediction_frame(task, [f"s{i}" for i in range(n)], prob[:, None], target=target).assign(
        fold=np.arange(n) % 3)[["id", "fold", "target", "prediction"]]


def test_binary_f1_thresholds_are_fitted_nested_with_f1_as_objective(tmp_path):
    sklearn = pytest.importorskip("sklearn.metrics")
    from kitpkg.rundir import RunDir
    from kitpkg.task import Task
    from kitpkg.train.decisions import fit_decisions, thresholds_for_test, write_decisions

    oof = _binary_oof()
    task = Task(kind="binary", outputs=1, metric="f1")
    decisions = fit_decisions(task, oof)
    f1 = lambda t, d: float(sklearn.f1_score(t, d, zero_division=0))  # noqa: E731
    pred, target, folds = oof["prediction"].to_numpy(), oof["target"].to_numpy(), oof["fold"].to_numpy()
    nested = fit_nested(pred, target, folds, lambda p, t: fit_thresholds(p, t, f1), apply_thresholds)
    assert decisions.params == pytest.approx(nested.params) and decisions.params != 0.5
    for k, score in decisions.scores.items():
        assert score == pytest.approx(f1(target[folds == k], nested.labels[folds == k]))
    assert decisions.pooled == pytest.approx(f1(target, nested.labels))
    assert decisions.default_mean == pytest.approx(np.mean([f1(target[folds == k], pred[folds == k] >= 0.5)
                                                            for k in range(3)]))
    # `kitpkg predict` on a run without thresholds.json fits them from oof.csv, the same
    run = RunDir(tmp_path)
    oof.to_csv(run.oof, index=False)
    assert thresholds_for_test(task, run, None) == pytest.approx(nested.params)
    assert json.loads(run.thresholds.read_text())["params"] == pytest.approx(nested.params)
    write_decisions(run, None)  # nothing fitted now: no stale thresholds.json left behind
    assert not run.thresholds.exists()


def test_metrics_of_scores_a_given_threshold_and_argmax_fit_nothing():
    from kitpkg.task import Task
    from kitpkg.train.decisions import fit_decisions

    oof = _binary_oof()
    assert fit_decisions(Task(kind="binary", outputs=1, metric="auc"), oof) is None
    assert fit_decisions(Task(kind="binary", outputs=1, metric={"name": "f1", "threshold": 0.3}), oof) is None
    multiclass = oof.assign(prob_0=1 - oof["prediction"], prob_1=oof["prediction"])
    multiclass["prediction"] = (multiclass["prob_1"] >= 0.5).astype(int)
    assert fit_decisions(Task(kind="multiclass", outputs=2, metric="accuracy"), multiclass) is None


def test_a_run_of_one_fold_keeps_the_default_thresholds_with_a_warning():
    from kitpkg.task import Task
    from kitpkg.train.decisions import fit_decisions

    oof = _binary_oof()
    with pytest.warns(RuntimeWarning, match="one fold"):
        assert fit_decisions(Task(kind="binary", outputs=1, metric="f1"), oof[oof["fold"] == 1]) is None


def test_multilabel_fbeta_samples_thresholds_are_fitted_on_the_whole_metric():
    sklearn = pytest.importorskip("sklearn.metrics")
    from kitpkg.predictions import prediction_frame
    from kitpkg.task import Task
    from kitpkg.train.decisions import fit_decisions

    rng = np.random.default_rng(5)
    target = (rng.uniform(size=(45, 3)) < 0.4).astype(int)
    pred = np.clip(0.3 * target + rng.uniform(0, 0.7, target.shape), 0, 1)
    task = Task(kind="multilabel", outputs=3, labels=("a", "b", "c"),
                metric={"name": "fbeta", "beta": 2, "average": "samples"})
    oof = prediction_frame(task, [f"s{i}" for i in range(45)], pred, fold=0, target=target)
    oof["fold"] = np.arange(45) % 3
    decisions = fit_decisions(task, oof)
    f2 = lambda t, d: float(sklearn.fbeta_score(t, d, beta=2, average="samples", zero_division=0))  # noqa: E731
    nested = fit_nested(pred, target, oof["fold"].to_numpy(), lambda p, t: fit_thresholds(p, t, f2),
                        apply_thresholds)
    assert decisions.params == pytest.approx(nested.params) and decisions.record["labels"] == ["a", "b", "c"]
    assert decisions.pooled == pytest.approx(f2(target, nested.labels))
