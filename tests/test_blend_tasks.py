"""`kitpkg blend` of runs whose predictions have several columns (multilabel, regression, soft): one weight per run
fitted nested on the runs' metric over the whole matrix, the blended OOF/test/submission columns, the sample's layout,
and refusals of runs of another kind or other label columns.

Run directories are written by tests/fakes/fake_runs.py through the kit's own writers (no training).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fakes.fake_runs import FakeData, make_run
from kitpkg.cli import main
from kitpkg.errors import KitError
from kitpkg.experiments.blend import fit_weights, run_blend
from kitpkg.task import make_task

LABELS = ("cat", "dog", "sky")


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _data(targets, n_test=12, k=4):
    n = len(targets)
    return FakeData([f"s{i:04d}" for i in range(n)], np.arange(n) % k, targets, n_test)


def _read(path, ids):
    """A prediction file's rows in the order of `ids` (the data's: a run's OOF is in fold order)."""
    return pd.read_csv(path, dtype={"id": str}).set_index("id").loc[ids].reset_index()


def _columns(run, name, columns, ids):
    """rows × columns of a run's prediction file, rows in the order of `ids`."""
    return _read(run / name, ids)[columns].to_numpy(np.float64)


def _matrix(runs, name, columns, ids):
    """rows × runs × columns of the runs' prediction files, rows in the order of `ids`."""
    return np.stack([_columns(r, name, columns, ids) for r in runs], axis=1)


def _weighted(preds, w):
    return np.einsum("nrk,r->nk", preds, np.asarray(w))


def _check_nested(summary, preds, target, folds, task):
    """Fold k's weights are the weights fitted on the other folds only; returns them by fold."""
    fit = summary["methods"]["fit"]
    weights = {int(k): np.array(w) for k, w in fit["fold_weights"].items()}
    for k in np.unique(folds):
        held = folds == k
        expected = fit_weights(preds[~held], target[~held], folds[~held], task)
        np.testing.assert_allclose(weights[int(k)], expected, atol=1e-12)
    return weights


@pytest.fixture(scope="module")
def multilabel_runs(tmp_path_factory):
    """Two multilabel runs of 3 labels on 4 folds (one sharp, one noisy), with test predictions."""
    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < 0.4).astype(int)
    data = _data(y)
    task = make_task("multilabel", 3, labels=LABELS)
    runs = [make_run(root / f"r{i}", data, _sigmoid((2 * y - 1) * (2 - i) + rng.normal(0, 1.5, y.shape)),
                     rng.random((4, 12, 3)), task=task,
                     config={"output.id_col": "image_id", "output.pred_col": "label"}) for i in range(2)]
    return root, data, task, runs


def test_multilabel_weights_are_fitted_nested_and_blend_every_column(multilabel_runs):
    root, data, task, runs = multilabel_runs
    summary = run_blend(runs, root / "blend")
    assert summary["method"] == "fit" and list(summary["methods"]) == ["fit", "mean", "rank"]
    pred_cols = [f"pred_{label}" for label in LABELS]
    target_cols = [f"target_{label}" for label in LABELS]
    preds = _matrix(runs, "oof.csv", pred_cols, data.ids)
    weights = _check_nested(summary, preds, data.targets.astype(float), data.folds, task)
    oof = _read(root / "blend" / "oof.csv", data.ids)
    assert list(oof.columns) == list(pd.read_csv(runs[0] / "oof.csv").columns)  # id, fold, target_*, pred_*
    np.testing.assert_array_equal(oof[target_cols].to_numpy(), data.targets)
    for k, w in weights.items():  # fold k's rows: the runs' predictions weighted by the weights fitted without k
        held = data.folds == k
        np.testing.assert_allclose(oof.loc[held, pred_cols].to_numpy(), _weighted(preds[held], w), rtol=1e-8)
    # the nested CV is scikit-learn's macro AUC over the labels of each fold's blended rows
    reference = [roc_auc_score(data.targets[data.folds == k], oof.loc[data.folds == k, pred_cols]) for k in weights]
    assert summary["methods"]["fit"]["mean"] == pytest.approx(np.mean(reference), abs=1e-6)
    # the submission: one column per label, the runs' test predictions weighted by the weights fitted on all OOF
    sub = pd.read_csv(root / "blend" / "submission.csv", dtype={"image_id": str})
    assert list(sub.columns) == ["image_id", *LABELS] and list(sub["image_id"]) == data.test_ids
    test_preds = _matrix(runs, "test_predictions.csv", pred_cols, data.test_ids)
    expected = _weighted(test_preds, summary["methods"]["fit"]["weights"])
    np.testing.assert_allclose(sub[list(LABELS)].to_numpy(), expected, rtol=1e-8)


def test_multilabel_rank_blends_each_column_by_its_ranks(multilabel_runs):
    root, data, _, runs = multilabel_runs
    run_blend(runs, root / "rank", method="rank")
    pred_cols = [f"pred_{label}" for label in LABELS]
    preds = _matrix(runs, "oof.csv", pred_cols, data.ids)
    ranks = pd.DataFrame(preds.reshape(len(preds), -1)).rank().to_numpy().reshape(preds.shape)
    expected = ((ranks - 1) / (len(preds) - 1)).mean(axis=1)  # each run's ranks of each label scaled into [0, 1]
    np.testing.assert_allclose(_read(root / "rank" / "oof.csv", data.ids)[pred_cols].to_numpy(), expected, rtol=1e-8)


def test_a_fold_never_sees_its_own_rows(multilabel_runs, tmp_path):
    """Spoiling the sharp run on fold 0 alone changes every weight fitted with fold 0, never fold 0's own."""
    root, data, task, runs = multilabel_runs
    before = run_blend(runs, tmp_path / "before")["methods"]["fit"]
    rng = np.random.default_rng(1)
    oof = _columns(runs[0], "oof.csv", [f"pred_{label}" for label in LABELS], data.ids)
    oof[data.folds == 0] = rng.random(((data.folds == 0).sum(), 3))
    spoiled = make_run(tmp_path / "spoiled", data, oof, rng.random((4, 12, 3)), task=task,
                       config={"output.id_col": "image_id", "output.pred_col": "label"})
    after = run_blend([spoiled, runs[1]], tmp_path / "blend")["methods"]["fit"]
    assert after["fold_weights"][0] == before["fold_weights"][0]
    assert after["fold_weights"][1] != before["fold_weights"][1] and after["weights"] != before["weights"]


def test_a_tags_sample_gets_the_labels_over_thresholds_fitted_on_the_blend(multilabel_runs, tmp_path):
    root, data, _, runs = multilabel_runs
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"image_name": data.test_ids[::-1], "tags": ""}).to_csv(sample, index=False)
    summary = run_blend(runs, tmp_path / "blend", method="mean", sample_submission=sample)
    thresholds = np.array(summary["thresholds"]["params"])  # per-label F1 thresholds, fitted nested on the OOF
    assert thresholds.shape == (3,) and summary["thresholds"]["objective"] == "f1 per label"
    sub = pd.read_csv(tmp_path / "blend" / "submission.csv", dtype=str, keep_default_na=False)
    assert list(sub.columns) == ["image_name", "tags"] and list(sub["image_name"]) == data.test_ids[::-1]
    test = pd.read_csv(tmp_path / "blend" / "test_predictions.csv", dtype={"id": str}).set_index("id")
    blended = test.loc[sub["image_name"], [f"pred_{label}" for label in LABELS]].to_numpy()
    expected = [" ".join(label for label, on in zip(LABELS, row) if on) for row in blended >= thresholds]
    assert list(sub["tags"]) == expected
    assert main(["blend", *map(str, runs), "--out", str(tmp_path / "cli"), "--method", "mean",
                 "--sample-submission", str(sample)]) == 0
    assert (tmp_path / "cli" / "submission.csv").read_bytes() == (tmp_path / "blend" / "submission.csv").read_bytes()


@pytest.mark.parametrize("kind", ["regression", "soft"])
def test_regression_and_soft_weights_are_fitted_nested_on_the_metric(tmp_path, kind):
    rng = np.random.default_rng(2)
    labels = ("a", "b", "c")
    if kind == "regression":  # values in the CSV's units, scored by RMSE
        y = rng.normal(50, 10, (160, 3))
        oofs = [y + rng.normal(0, s, y.shape) for s in (3, 8)]
        tests = [rng.normal(50, 10, (4, 12, 3)) for _ in oofs]
    else:  # distributions, scored by KL(target || blend)
        y = rng.dirichlet(np.ones(3), 160)
        oofs = [0.6 * y + 0.4 * rng.dirichlet(np.ones(3), 160), rng.dirichlet(np.ones(3), 160)]
        tests = [rng.dirichlet(np.ones(3), (4, 12)) for _ in oofs]
    data = _data(y)
    task = make_task(kind, 3, labels=labels)
    runs = [make_run(tmp_path / f"r{i}", data, o, t, task=task) for i, (o, t) in enumerate(zip(oofs, tests))]
    summary = run_blend(runs, tmp_path / "blend")
    assert summary["method"] == "fit" and list(summary["methods"]) == ["fit", "mean"]
    pred_cols = [f"pred_{label}" for label in labels]
    preds = _matrix(runs, "oof.csv", pred_cols, data.ids)
    y = _columns(runs[0], "oof.csv", [f"target_{label}" for label in labels], data.ids)  # as the runs wrote it
    weights = _check_nested(summary, preds, y, data.folds, task)
    assert summary["methods"]["fit"]["weights"][0] > 0.5  # the sharper run weighs more
    oof = _read(tmp_path / "blend" / "oof.csv", data.ids)
    scores = []
    for k, w in weights.items():
        held = data.folds == k
        blended = oof.loc[held, pred_cols].to_numpy()
        np.testing.assert_allclose(blended, _weighted(preds[held], w), rtol=1e-8)
        if kind == "regression":  # RMSE by hand
            scores.append(np.sqrt(np.mean((y[held] - blended) ** 2)))
        else:  # KL(target || blend), rows summing to 1
            np.testing.assert_allclose(blended.sum(axis=1), 1, rtol=1e-8)
            scores.append(np.mean(np.sum(y[held] * np.log(y[held] / blended), axis=1)))
    assert summary["methods"]["fit"]["mean"] == pytest.approx(np.mean(scores), rel=1e-7)
    sub = pd.read_csv(tmp_path / "blend" / "submission.csv", dtype={"image_name": str})
    assert list(sub.columns) == ["image_name", *labels]  # the kit's layout: one column per target column or class
    test_preds = _matrix(runs, "test_predictions.csv", pred_cols, data.test_ids)
    expected = _weighted(test_preds, summary["methods"]["fit"]["weights"])
    np.testing.assert_allclose(sub[list(labels)].to_numpy(), expected, rtol=1e-8)
    with pytest.raises(KitError, match=rf"--method rank: needs binary or multilabel runs .*; {kind} runs blend with "
                                       r"--method fit or mean"):
        run_blend(runs, tmp_path / "rank", method="rank")


def test_refuses_runs_of_two_kinds_or_other_label_columns_in_one_line(multilabel_runs, tmp_path):
    _, data, _, runs = multilabel_runs
    rng = np.random.default_rng(3)
    regression = make_run(tmp_path / "regression", data, rng.random((200, 3)), rng.random((4, 12, 3)),
                          task=make_task("regression", 3, labels=LABELS))
    with pytest.raises(KitError, match=r"r0 and .*regression: other tasks \(multilabel, 3 outputs vs regression, "
                                       r"3 outputs\); blend runs of one task") as err:
        run_blend([runs[0], regression], tmp_path / "out")
    assert "\n" not in str(err.value)
    other = make_run(tmp_path / "other", data, rng.random((200, 3)), rng.random((4, 12, 3)),
                     task=make_task("multilabel", 3, labels=("cat", "dog", "sea")),
                     config={"output.id_col": "image_id", "output.pred_col": "label"})
    with pytest.raises(KitError, match=r"other label columns \(cat, dog, sky vs cat, dog, sea\); blend runs trained "
                                       r"on the same label columns") as err:
        run_blend([runs[0], other], tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
