"""train.metric drives a run (issue 19 item 3): the validation metric, the best epoch, early stopping, the fold and CV
scores, `kitpkg runs`' order and `kitpkg blend`'s objective follow the chosen metric (a registry name, a mapping with
its parameters, or the user's Kaggle metric file) and its direction; the report draws the plot each kind means.

Reference values are computed here from the OOF files with scikit-learn / numpy, never by the registry under test.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes.user_metric import MAE_METRIC_FILE  # noqa: E402
from task_data import make_kind_data  # noqa: E402
from tiny_tables import tiny_config  # noqa: E402

from kitpkg.config import load_config  # noqa: E402
from kitpkg.errors import KitError  # noqa: E402
from kitpkg.train import cv  # noqa: E402
from kitpkg.train.inputs import load_inputs  # noqa: E402
from kitpkg.train.results import fold_result  # noqa: E402

sklearn_metrics = pytest.importorskip("sklearn.metrics")



def _run(tmp_path: Path, kind: str, metric, epochs: int = 3, **train) -> Path:
    """A finished tiny CV of `kind` (2 folds) scored by `metric`: its run directory."""
    data = make_kind_data(tmp_path / "data", kind, n=24, n_test=4, folds=2)
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "my_metric.py").write_text(MAE_METRIC_FILE)
    path = tiny_config(folder, data.manifest.root, data={"batch_size": 4}, optim={"name": "adamw", "lr": 0.01},
                       train={"epochs": epochs, "task": kind, "metric": metric, **train})
    run_dir = tmp_path / "run"
    cv.run_cv(load_config(path), run_dir)
    return run_dir


def _folds(run_dir: Path):
    import json

    oof = pd.read_csv(run_dir / "oof.csv")
    records = {k: json.loads((run_dir / "folds" / f"fold{k}.json").read_text()) for k in sorted(oof["fold"].unique())}
    histories = {k: pd.read_csv(next((run_dir).glob(f"**/fold{k}/metrics.csv"))) for k in records}
    return oof, records, histories


def _val(history: pd.DataFrame, key: str) -> pd.Series:
    rows = history.dropna(subset=[key]).sort_values("epoch")
    return rows.set_index("epoch")[key]


def test_binary_pauc_scores_folds_by_the_partial_auc(tmp_path):
    run_dir = _run(tmp_path, "binary", {"name": "pauc", "min_tpr": 0.5}, epochs=2)
    oof, records, histories = _folds(run_dir)
    for k, record in records.items():
        rows = oof[oof["fold"] == k]
        # Kaggle's ISIC 2024 pAUC: roc_auc_score of the swapped classes with max_fpr, un-standardised (McClish)
        v_gt, v_pred = np.abs(rows["target"].to_numpy() - 1), -rows["prediction"].to_numpy()
        max_fpr = 1 - 0.5
        partial = sklearn_metrics.roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
        expected = 0.5 * max_fpr ** 2 + (max_fpr - 0.5 * max_fpr ** 2) / (1.0 - 0.5) * (partial - 0.5)
        assert record["score"] == pytest.approx(expected, abs=1e-9)
        assert "val_pauc" in histories[k]
    state = (run_dir / "state.json").read_text()
    assert '"pauc"' in state


def test_multiclass_balanced_accuracy_scores_the_argmax_class(tmp_path):
    run_dir = _run(tmp_path, "multiclass", "balanced_accuracy", epochs=2)
    oof, records, histories = _folds(run_dir)
    probs = [c for c in oof.columns if c.startswith("prob_")]
    for k, record in records.items():
        rows = oof[oof["fold"] == k]
        expected = sklearn_metrics.balanced_accuracy_score(rows["target"], rows[probs].to_numpy().argmax(1))
        assert record["score"] == pytest.approx(expected, abs=1e-12)
        assert "val_balanced_accuracy" in histories[k]
    assert (run_dir / "confusion.png").stat().st_size > 0  # the report's plot for classes
    assert not (run_dir / "roc.png").exists()


def test_regression_mae_picks_the_lowest_epoch_and_stops_early_downhill(tmp_path):
    run_dir = _run(tmp_path, "regression", "mae", epochs=5, early_stopping={"patience": 1})
    oof, records, histories = _folds(run_dir)
    for k, record in records.items():
        rows = oof[oof["fold"] == k]
        assert record["score"] == pytest.approx(sklearn_metrics.mean_absolute_error(rows["target"],
                                                                                   rows["prediction"]), rel=1e-9)
        val = _val(histories[k], "val_mae")
        assert record["best_epoch"] == int(val.idxmin())  # lower is better: the lowest MAE's epoch
        # early stopping in the metric's direction: stop after the first validation that is not lower than the best
        best, expected_last = val.iloc[0], val.index[-1]
        for epoch, value in val.iloc[1:].items():
            if not value < best:
                expected_last = epoch
                break
            best = value
        assert val.index[-1] == expected_last
    assert (run_dir / "predicted_vs_true.png").stat().st_size > 0


def test_a_user_metric_file_scores_the_folds_in_its_own_direction(tmp_path):
    run_dir = _run(tmp_path, "binary", "my_metric.py:score")
    oof, records, histories = _folds(run_dir)
    for k, record in records.items():
        rows = oof[oof["fold"] == k]
        assert record["score"] == pytest.approx(np.mean(np.abs(rows["target"] - rows["prediction"])), rel=1e-9)
        val = _val(histories[k], "val_my_metric")
        assert record["best_epoch"] == int(val.idxmin())  # higher_is_better = False
    assert "CV my_metric.py:score" in fold_result(load_inputs(load_config(tmp_path / "exp" / "exp.yaml")),
                                                     cv.open_run(load_config(tmp_path / "exp" / "exp.yaml"),
                                                                 run_dir)[1], [0, 1]).summary()


def test_config_refuses_a_metric_the_task_cannot_use_in_one_line(tmp_path):
    data_dir = tmp_path / "shards"
    data_dir.mkdir()
    for metric, message in (("rmse", r"train.metric: rmse does not score a binary task"),
                            ("nope", r"train.metric: unknown metric 'nope'"),
                            ({"name": "pauc", "min_tpr": 2}, r"train.metric: pauc's min_tpr must be"),
                            ("missing.py:score", r"train.metric: metric file missing.py not found")):
        path = tiny_config(tmp_path, data_dir, train={"task": "binary", "metric": metric})
        with pytest.raises(KitError, match=message) as err:
            load_config(path)
        assert "\n" not in str(err.value)


def test_runs_lists_a_lower_is_better_metric_lowest_first(tmp_path):
    from fakes.fake_runs import fake_data
    from kitpkg.experiments.runs import compare, load_run
    from kitpkg.task import make_task

    data = fake_data(120, k=3, seed=2)
    rng = np.random.default_rng(0)
    y = data.targets
    task = make_task("binary", 1, metric="logloss")
    dirs = [_fake_run(tmp_path / name, data, np.clip(y * 0.5 + 0.25 + rng.normal(0, noise, len(y)), 0.01, 0.99),
                      task) for name, noise in (("noisy", 0.3), ("clean", 0.05), ("middle", 0.15))]
    rows = compare([load_run(d) for d in dirs])
    means = [row.run.mean for row in rows]
    assert means == sorted(means)  # log loss: lowest (best) first
    assert [row.run.name for row in rows][0] == "clean"
    assert rows[0].cells()["CV"].endswith("log loss")


def _fake_run(run_dir: Path, fake, oof: np.ndarray, task) -> Path:
    """A finished run directory of binary probabilities `oof` scored by `task`'s metric (no training)."""
    from unittest import mock

    from fakes.fake_runs import fake_config, write_best_checkpoint
    from kitpkg.train import predict as P
    from kitpkg.train.cv import finish, record_fold
    from kitpkg.train.inputs import RunInputs
    from kitpkg.train.runstate import RunState

    cfg = fake_config(run_dir, fake, {"train.metric": task.metric}, None)
    inputs = RunInputs(fake.manifest, [], 1, task=task)
    state = RunState.open(run_dir, cfg, inputs.fingerprints(), task=task)
    row = {i: n for n, i in enumerate(fake.ids)}
    for k in fake.manifest.folds():
        ids = P.fold_ids(fake.manifest, "val", k)
        frame = P.pd.DataFrame({"id": ids, "target": fake.targets[[row[i] for i in ids]].astype(float),
                                "s0": oof[[row[i] for i in ids]]})
        write_best_checkpoint(run_dir, k)
        record_fold(state, k, frame, None, inputs, "prob")
    with mock.patch("kitpkg.train.report.write_report"):
        finish(cfg, inputs, state, fake.manifest.folds())
    return run_dir


def test_blend_fits_weights_for_the_runs_metric_not_auc():
    from kitpkg.experiments.blend import fit_weights
    from kitpkg.task import make_task

    rng = np.random.default_rng(0)
    target = (rng.uniform(size=400) < 0.5).astype(float)
    calibrated = np.clip(np.where(target > 0, 0.7, 0.3) + rng.normal(0, 0.15, 400), 0.02, 0.98)
    squashed = 0.5 + (calibrated - 0.5) * 0.1  # the same ranking (the same AUC), far from the labels
    preds, folds = np.stack([squashed, calibrated], axis=1), np.arange(400) % 4
    weights = fit_weights(preds, target, folds, make_task("binary", 1, metric="logloss"))

    def logloss(w):
        p = preds @ w
        return float(np.mean([sklearn_metrics.log_loss(target[folds == k], p[folds == k], labels=[0, 1])
                              for k in range(4)]))

    assert weights[1] > 0.9  # log loss wants the calibrated run
    assert logloss(weights) < logloss(np.array([0.5, 0.5]))
    assert np.allclose(fit_weights(preds, target, folds), [0.5, 0.5])  # AUC cannot tell them apart


def test_report_draws_a_confusion_matrix_for_ordinal_and_soft_classes(tmp_path):
    from kitpkg.predictions import Predictions
    from kitpkg.task import make_task
    from kitpkg.train.report import plot_confusion

    ordinal = Predictions(ids=np.arange(6).astype(str), fold=np.zeros(6, int), target=np.array([0, 1, 2, 3, 1, 2]),
                          pred=np.array([0.2, 1.4, 2.6, 2.9, 0.4, 2.1]))
    soft = Predictions(ids=np.arange(3).astype(str), fold=np.zeros(3, int), target=np.eye(3)[[0, 2, 1]] * 0.8 + 0.066,
                       pred=np.eye(3)[[0, 1, 1]] * 0.5 + 0.1)
    for name, oof, task in (("ord", ordinal, make_task("ordinal", 1, ["grade"], ["0", "1", "2", "3"])),
                            ("soft", soft, make_task("soft", 3, ["a", "b", "c"]))):
        plot_confusion(oof, task, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_the_metric_file_s_content_counts_in_the_config_hash(tmp_path):
    from kitpkg.config import config_hash, diff_keys, result_dict

    (tmp_path / "my_metric.py").write_text(MAE_METRIC_FILE)
    path = tiny_config(tmp_path, tmp_path, train={"task": "binary", "metric": "my_metric.py:score"})
    before = result_dict(load_config(path))  # as a run records it when it opens (state.json "config")
    hash_before = config_hash(load_config(path))
    (tmp_path / "my_metric.py").write_text(MAE_METRIC_FILE.replace("np.mean", "np.median"))
    after = load_config(path)
    assert config_hash(after) != hash_before  # an edited metric file is another run, named in the refusal
    assert [line.split(":")[0] for line in diff_keys(before, result_dict(after))] == ["train.metric.file_sha256"]
    plain = load_config(tiny_config(tmp_path, tmp_path, name="plain", train={"task": "binary", "metric": "pauc"}))
    assert not any("sha256" in key for key in result_dict(plain))


def test_monitor_follows_the_metric_s_direction_and_refuses_a_key_never_logged():
    from kitpkg.task import make_task

    assert make_task("regression", 1, ["size"], metric="mae").monitor() == ("val_mae", "min")
    assert make_task("binary", 1, metric="logloss").monitor("val_logloss") == ("val_logloss", "min")
    assert make_task("multiclass", 3, metric="balanced_accuracy").monitor() == ("val_balanced_accuracy", "max")
    assert make_task("binary", 1).monitor("val_loss") == ("val_loss", "min")
    with pytest.raises(KitError, match=r"train.monitor: val_mae is not logged by this run .*val_auc"):
        make_task("binary", 1).monitor("val_mae")
