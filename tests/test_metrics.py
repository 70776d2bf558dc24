"""Metrics by name (`train.metric`): each built-in equals its reference implementation on the same random predictions
(scikit-learn, or Kaggle's published metric code transcribed below), points the right way, and the config value --
a name, a mapping with parameters or a user's file of Kaggle metric code -- is parsed or refused in one line."""
from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pandas as pd
import pandas.api.types
import pytest
from sklearn import metrics as skm

from kitpkg.errors import KitError
from kitpkg.metric_file import FrameColumns, arrays_to_frames
from kitpkg.metrics import KINDS, METRICS, default_metric, label_decisions, metric_from_spec, metrics_for

N, C, L = 300, 4, 3


def _rng(seed=0):
    return np.random.default_rng(seed)


def _binary(seed=0):
    rng = _rng(seed)
    y = rng.integers(0, 2, N)
    return y, np.clip(0.3 * y + 0.7 * rng.random(N), 0, 1)  # informative, not perfect


def _multiclass(seed=0):
    rng = _rng(seed)
    y = rng.integers(0, C, N)
    p = rng.dirichlet(np.ones(C), N) + 0.6 * np.eye(C)[y]
    return y, p / p.sum(1, keepdims=True)


def _multilabel(seed=0):
    rng = _rng(seed)
    y = rng.integers(0, 2, (N, L))
    return y, np.clip(0.4 * y + 0.6 * rng.random((N, L)), 0, 1)


def _ordinal(seed=0):
    rng = _rng(seed)
    y = rng.integers(0, C, N)
    return y, y + rng.normal(0, 0.8, N)


def _soft(seed=0, zeros=True):
    rng = _rng(seed)
    t = rng.dirichlet(np.ones(C), N)
    if zeros:  # soft labels of expert votes hold zeros: Kaggle's KL counts their terms 0
        t[rng.random((N, C)) < 0.3] = 0
        t[t.sum(1) == 0, 0] = 1
        t /= t.sum(1, keepdims=True)
    return t, rng.dirichlet(np.ones(C), N)


def _score(name, kind, target, pred, **params):
    return metric_from_spec({"name": name, **params}, ".", kind).compute(target, pred)


# --- references transcribed from Kaggle's published metric code ------------------------------------------------------
def kaggle_isic_2024_pauc(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str,
                          min_tpr: float = 0.80) -> float:
    """ISIC 2024's `score`, from Kaggle's metric notebook (ISIC 2024 - Skin Cancer Detection with 3D-TBP), also in
    github.com/ISIC-Research/Challenge-2024-Metrics PrimaryMetric-pAUC.py ((c) 2024 Nicholas R Kurtansky, MSKCC)."""
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    v_gt = abs(np.asarray(solution.values) - 1)  # classes swapped: scikit-learn only has max_fpr
    v_pred = -1.0 * np.asarray(submission.values)  # scores negated
    max_fpr = abs(1 - min_tpr)
    fpr, tpr, _ = skm.roc_curve(v_gt, v_pred, sample_weight=None)
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr = np.append(fpr[:stop], max_fpr)
    return skm.auc(fpr, tpr)


def kaggle_hms_kl_divergence(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str,
                             epsilon: float = 10 ** -15) -> float:
    """HMS - Harmful Brain Activity Classification 2024: Kaggle's `kl_divergence` metric (kaggle.com/code/metric/
    kullback-leibler-divergence, as copied at kaggle.com/datasets/cdeotte/kaggle-kl-div), micro average, no weights."""
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    for col in solution.columns:
        if not pandas.api.types.is_float_dtype(solution[col]):
            solution[col] = solution[col].astype(float)
        submission[col] = np.clip(submission[col], epsilon, 1 - epsilon)  # the submission only, not renormalised
        y_nonzero_indices = solution[col] != 0
        solution.loc[y_nonzero_indices, col] = solution.loc[y_nonzero_indices, col] * np.log(
            solution.loc[y_nonzero_indices, col] / submission.loc[y_nonzero_indices, col])
        solution.loc[~y_nonzero_indices, col] = 0
    return np.average(solution.sum(axis=1))


def _frames(target, pred):
    return arrays_to_frames(np.asarray(target), np.asarray(pred), FrameColumns(id="row_id"))


# --- each metric against its reference -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["binary", "score_class"])
def test_auc_equals_scikit_learn(kind):
    y, p = _binary()
    assert _score("auc", kind, y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-6)


@pytest.mark.parametrize("min_tpr", [0.8, 0.5, 0.95])
def test_pauc_equals_kaggles_isic_2024_metric(min_tpr):
    y, p = _binary()
    p = np.round(p, 2)  # ties too
    expected = kaggle_isic_2024_pauc(*_frames(y, p), "row_id", min_tpr=min_tpr)
    assert _score("pauc", "binary", y, p, min_tpr=min_tpr) == pytest.approx(expected, abs=1e-12)


def test_pauc_of_a_perfect_ranking_is_its_maximum_0_2_and_of_a_reversed_one_0():
    y, _ = _binary()
    assert _score("pauc", "binary", y, y * 0.9 + 0.05) == pytest.approx(0.2)
    assert _score("pauc", "binary", y, 1 - y * 0.9) == pytest.approx(0.0)


@pytest.mark.parametrize("kind, data, decide", [
    ("binary", _binary, lambda y, p: (y, (p >= 0.5) * 1)),
    ("multiclass", _multiclass, lambda y, p: (y, p.argmax(1))),
    ("multilabel", _multilabel, lambda y, p: (y, (p >= 0.5) * 1)),
    ("ordinal", _ordinal, lambda y, p: (y, np.clip(np.floor(p + 0.5), 0, C - 1))),
    ("soft", _soft, lambda t, p: (t.argmax(1), p.argmax(1))),
])
def test_accuracy_equals_scikit_learn(kind, data, decide):
    target, pred = data()
    assert _score("accuracy", kind, target, pred) == pytest.approx(skm.accuracy_score(*decide(target, pred)))


@pytest.mark.parametrize("kind, data, decide", [
    ("binary", _binary, lambda y, p: (y, (p >= 0.3) * 1)),
    ("multiclass", _multiclass, lambda y, p: (y, p.argmax(1))),
    ("ordinal", _ordinal, lambda y, p: (y, np.clip(np.floor(p + 0.5), 0, C - 1))),
])
def test_balanced_accuracy_equals_scikit_learn(kind, data, decide):
    target, pred = data()
    params = {"threshold": 0.3} if kind == "binary" else {}
    expected = skm.balanced_accuracy_score(*decide(target, pred))
    assert _score("balanced_accuracy", kind, target, pred, **params) == pytest.approx(expected)


@pytest.mark.parametrize("average", ["macro", "micro"])
@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_fbeta_of_a_multiclass_task_equals_scikit_learn(beta, average):
    y, p = _multiclass()
    p[y == 3] = np.eye(C)[0]  # class 3 never decided: the macro average still counts it (it is in the target)
    expected = skm.fbeta_score(y, p.argmax(1), beta=beta, average=average, zero_division=0)
    assert _score("fbeta", "multiclass", y, p, beta=beta, average=average) == pytest.approx(expected, rel=1e-6)
    if beta == 1.0:
        assert _score("f1", "multiclass", y, p, average=average) == pytest.approx(
            skm.f1_score(y, p.argmax(1), average=average), rel=1e-6)


@pytest.mark.parametrize("average", ["macro", "micro", "samples"])
def test_fbeta_of_a_multilabel_task_equals_scikit_learn_at_each_labels_threshold(average):
    y, p = _multilabel()
    y[:20], p[:20] = 0, 0.1  # samples with no label true nor decided count 0 in the samples average
    cuts = [0.4, 0.5, 0.7]
    expected = skm.fbeta_score(y, (p >= cuts) * 1, beta=2, average=average, zero_division=0)
    assert _score("fbeta", "multilabel", y, p, beta=2, average=average, threshold=cuts) == pytest.approx(expected,
                                                                                                       rel=1e-6)


def test_f1_of_a_binary_task_is_the_positive_class_f1_at_its_threshold():
    y, p = _binary()
    assert _score("f1", "binary", y, p, threshold=0.6) == pytest.approx(skm.f1_score(y, (p >= 0.6) * 1), rel=1e-6)
    assert _score("fbeta", "binary", y, p, beta=3) == pytest.approx(skm.fbeta_score(y, (p >= 0.5) * 1, beta=3),
                                                                     rel=1e-6)


@pytest.mark.parametrize("kind, data", [("binary", _binary), ("multiclass", _multiclass)])
def test_logloss_equals_scikit_learn(kind, data):
    target, pred = data()
    assert _score("logloss", kind, target, pred) == pytest.approx(skm.log_loss(target, pred), rel=1e-9)


def test_logloss_of_a_multilabel_task_is_the_mean_column_log_loss():
    y, p = _multilabel()
    expected = np.mean([skm.log_loss(y[:, j], p[:, j]) for j in range(L)])
    assert _score("logloss", "multilabel", y, p) == pytest.approx(expected, rel=1e-9)


def test_logloss_of_a_certain_wrong_prediction_is_finite():
    clipped = (-math.log(1e-15) - math.log(1 - (1 - 1e-15))) / 2  # Kaggle's clip at 1e-15 on both sides
    assert _score("logloss", "binary", np.array([1, 0]), np.array([0.0, 1.0])) == pytest.approx(clipped, rel=1e-12)


def test_mean_auc_is_the_column_wise_auc_mean():
    y, p = _multilabel()
    assert _score("mean_auc", "multilabel", y, p) == pytest.approx(skm.roc_auc_score(y, p, average="macro"), abs=1e-6)
    y, p = _multiclass()  # one-vs-rest, as Plant Pathology 2020 scored its one-hot columns
    assert _score("mean_auc", "multiclass", y, p) == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-6)


def test_mean_auc_leaves_out_a_column_of_one_class_and_is_nan_without_any():
    y, p = _multilabel()
    y[:, 1] = 0
    expected = np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in (0, 2)])
    assert _score("mean_auc", "multilabel", y, p) == pytest.approx(expected, abs=1e-6)
    assert math.isnan(_score("mean_auc", "multilabel", np.zeros_like(y), p))


@pytest.mark.parametrize("kind, data, decide", [
    ("ordinal", _ordinal, lambda y, p: np.clip(np.floor(p + 0.5), 0, C - 1)),
    ("multiclass", _multiclass, lambda y, p: p.argmax(1)),
])
def test_qwk_equals_scikit_learns_quadratic_kappa(kind, data, decide):
    target, pred = data()
    expected = skm.cohen_kappa_score(target, decide(target, pred), weights="quadratic")
    assert _score("qwk", kind, target, pred) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("shape", [(N,), (N, 3)])
def test_rmse_and_mae_equal_scikit_learn(shape):
    rng = _rng()
    target = rng.normal(10, 3, shape)
    pred = target + rng.normal(0, 2, shape)
    assert _score("rmse", "regression", target, pred) == pytest.approx(
        math.sqrt(skm.mean_squared_error(target, pred)), rel=1e-9)
    assert _score("mae", "regression", target, pred) == pytest.approx(skm.mean_absolute_error(target, pred), rel=1e-9)


def test_kl_equals_kaggles_hms_2024_metric():
    target, pred = _soft()
    pred[:5, 0] = 0.0  # clipped to 1e-15, not renormalised
    pred[:5] /= pred[:5].sum(1, keepdims=True)
    expected = kaggle_hms_kl_divergence(*_frames(target, pred), "row_id")
    assert _score("kl", "soft", target, pred) == pytest.approx(expected, rel=1e-12)


def test_every_metric_has_a_reference_test_above():
    tested = {"auc", "pauc", "accuracy", "balanced_accuracy", "f1", "fbeta", "logloss", "mean_auc", "qwk", "rmse",
              "mae", "kl"}
    assert set(METRICS) == tested, "a new metric needs a test against its reference implementation"


# --- direction ---------------------------------------------------------------------------------------------------------
_DATA = {"binary": _binary, "score_class": _binary, "multiclass": _multiclass, "multilabel": _multilabel,
         "ordinal": _ordinal, "soft": lambda: _soft(zeros=False),
         "regression": lambda: (_rng().normal(0, 1, N), _rng(1).normal(0, 1, N))}


def _perfect(kind, target):
    if kind == "multiclass":
        return np.eye(C)[target] * 0.97 + 0.01
    if kind == "soft":
        return target.copy()
    return target.astype(np.float64) * 0.98 + (0.01 if kind in ("binary", "score_class", "multilabel") else 0.0)


@pytest.mark.parametrize("name, kind", [(n, k) for n, e in METRICS.items() for k in sorted(e.kinds)])
def test_a_perfect_prediction_scores_better_than_a_noisy_one(name, kind):
    target, noisy = _DATA[kind]()
    params = {"beta": 2} if name == "fbeta" else {}
    metric = metric_from_spec({"name": name, **params}, ".", kind)
    perfect, noise = metric.compute(target, _perfect(kind, target)), metric.compute(target, noisy)
    assert metric.better(perfect, noise) and not metric.better(noise, perfect)
    assert sorted([noise, perfect], key=metric.sort_key)[0] == perfect
    assert metric.mode == ("max" if metric.higher_is_better else "min")


def test_a_number_is_better_than_nan_and_nan_sorts_last():
    for name in ("auc", "logloss"):
        metric = metric_from_spec(name, ".", "binary")
        assert metric.better(0.3, float("nan")) and not metric.better(float("nan"), 0.3)
        assert not metric.better(float("nan"), float("nan"))
        assert math.isnan(sorted([float("nan"), 0.3, 0.6], key=metric.sort_key)[-1])
    assert metric_from_spec("logloss", ".", "binary").better(0.3, 0.6)
    assert metric_from_spec("auc", ".", "binary").better(0.6, 0.3)


def test_a_fold_of_one_class_has_no_auc_nor_pauc():
    for name in ("auc", "pauc"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert math.isnan(_score(name, "binary", np.zeros(5), np.linspace(0, 1, 5)))


# --- label decisions -----------------------------------------------------------------------------------------------------
def test_ordinal_decisions_round_half_up_clip_to_the_classes_or_follow_given_cuts():
    target = np.array([0, 1, 1, 2, 2])
    pred = np.array([-0.7, 0.5, 1.49, 2.5, 9.0])
    assert label_decisions("ordinal", target, pred, num_classes=4)[1].tolist() == [0, 1, 1, 3, 3]
    assert label_decisions("ordinal", target, pred)[1].tolist() == [0, 1, 1, 2, 2]  # classes: the largest target + 1
    cuts = [0.3, 1.7, 2.2]
    pred = np.array([0.2, 0.3, 1.0, 1.8, 2.5])
    assert label_decisions("ordinal", target, pred, cuts)[1].tolist() == [0, 1, 1, 2, 3]
    assert _score("accuracy", "ordinal", target, pred, threshold=cuts) == pytest.approx(0.8)


def test_binary_decisions_put_a_score_at_the_threshold_positive():
    assert label_decisions("binary", np.array([0, 1]), np.array([0.49, 0.5]))[1].tolist() == [0, 1]


# --- built-ins score Kaggle frames -----------------------------------------------------------------------------------
def test_a_builtin_scores_frames_matched_by_id_and_column_name():
    target, pred = _multilabel()
    solution = pd.DataFrame({"id": np.arange(N), **{f"l{j}": target[:, j] for j in range(L)}})
    order = _rng(3).permutation(N)
    submission = pd.DataFrame({"id": order, **{f"l{j}": pred[order, j] for j in reversed(range(L))}})
    metric = metric_from_spec("mean_auc", ".", "multilabel")
    assert metric.score_frames(solution, submission, "id") == pytest.approx(metric.compute(target, pred))


def test_a_multiclass_solution_of_one_hot_columns_is_scored_as_class_indices():
    y, p = _multiclass()
    names = [f"c{k}" for k in range(C)]
    solution = pd.DataFrame({"image_id": np.arange(N), **dict(zip(names, np.eye(C)[y].T))})
    submission = pd.DataFrame({"image_id": np.arange(N), **dict(zip(names, p.T))})
    metric = metric_from_spec("mean_auc", ".", "multiclass")
    assert metric.score_frames(solution, submission, "image_id") == pytest.approx(metric.compute(y, p))


def test_frames_without_the_id_column_or_missing_ids_are_refused():
    metric = metric_from_spec("auc", ".", "binary")
    solution = pd.DataFrame({"id": [1, 2, 3], "target": [0, 1, 0]})
    with pytest.raises(KitError, match="submission frame has no id column 'id'"):
        metric.score_frames(solution, pd.DataFrame({"key": [1, 2, 3], "target": [0.1, 0.2, 0.3]}), "id")
    with pytest.raises(KitError, match="lacks 1 ids of the solution"):
        metric.score_frames(solution, pd.DataFrame({"id": [1, 2, 4], "target": [0.1, 0.2, 0.3]}), "id")


# --- the config value ------------------------------------------------------------------------------------------------
def test_each_kind_has_a_default_metric_that_scores_it():
    expected = {"binary": "auc", "score_class": "auc", "multiclass": "accuracy", "multilabel": "mean_auc",
                "regression": "rmse", "ordinal": "qwk", "soft": "kl"}
    assert {kind: default_metric(kind) for kind in KINDS} == expected
    for kind in KINDS:
        assert default_metric(kind) in metrics_for(kind)
        assert metric_from_spec(None, ".", kind).name == default_metric(kind)


def test_a_mapping_passes_its_parameters():
    y, p = _binary()
    assert _score("pauc", "binary", y, p, min_tpr=0.5) != _score("pauc", "binary", y, p)
    metric = metric_from_spec({"name": "fbeta", "beta": 2}, ".", "multilabel")
    assert (metric.name, metric.needs, metric.params) == ("fbeta", "decisions", {"beta": 2, "average": "macro",
                                                                                 "threshold": None})
    assert metric_from_spec("auc", ".", "binary").needs == "scores"


@pytest.mark.parametrize("spec, kind, message", [
    ("roc", "binary", "train.metric: unknown metric 'roc'; use one of auc, pauc, accuracy"),
    (3, "binary", "train.metric: 3 is not a metric"),
    ({"min_tpr": 0.8}, "binary", "is not a metric; give a name (auc), a mapping"),
    ("auc", "multiclass", "train.metric: auc does not score a multiclass task (it scores binary, score_class); "
                          "for multiclass use one of accuracy, balanced_accuracy, f1, fbeta, logloss, mean_auc, qwk"),
    ("kl", "regression", "train.metric: kl does not score a regression task"),
    ({"name": "pauc", "max_fpr": 0.2}, "binary", "train.metric: pauc takes min_tpr (got max_fpr)"),
    ({"name": "auc", "min_tpr": 0.8}, "binary", "train.metric: auc takes no parameters (got min_tpr)"),
    ({"name": "f1", "beta": 2}, "binary", "train.metric: f1 takes average, threshold (got beta)"),
    ("fbeta", "binary", "train.metric: fbeta needs beta (e.g. {name: fbeta, beta: 2})"),
    ({"name": "pauc", "min_tpr": 1.0}, "binary", "pauc's min_tpr must be a number between 0 and 1"),
    ({"name": "fbeta", "beta": -1}, "binary", "fbeta's beta must be a positive number"),
    ({"name": "f1", "average": "weighted"}, "multiclass", "f1's average must be one of macro, micro, samples"),
    ({"name": "f1", "average": "samples"}, "multiclass", "f1's average samples needs a multilabel task"),
    ({"name": "accuracy", "threshold": 0.3}, "multiclass", "threshold does not apply: a multiclass task decides by"),
    ({"name": "qwk", "threshold": [1.5, 0.5]}, "ordinal", "threshold must be the ascending cuts between classes"),
    ({"name": "f1", "threshold": "high"}, "binary", "f1's threshold must be a number (got 'high')"),
    ("auc", "images", "train.metric: unknown task kind 'images'"),
])
def test_a_bad_spec_is_refused_in_one_line_naming_the_fix(spec, kind, message):
    with pytest.raises(KitError) as info:
        metric_from_spec(spec, ".", kind)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_arrays_of_the_wrong_shape_for_the_kind_are_refused_naming_it():
    metric = metric_from_spec("auc", ".", "binary")
    with pytest.raises(KitError, match=r"train.metric auc: a binary task scores .* \(N,\) and \(N,\); got \(4,\) and "
                                       r"\(4, 2\)"):
        metric.compute(np.zeros(4), np.zeros((4, 2)))


# --- a user's own metric file ----------------------------------------------------------------------------------------
USER_METRIC = '''\
import numpy as np
from helper import column_values  # a helper beside the metric file

higher_is_better = {higher}


def score(solution, submission, row_id_column_name, power=1.0):
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    return float(np.mean(np.abs(column_values(solution) - column_values(submission)) ** power))


def other():
    return 0
'''


@pytest.fixture()
def user_metric(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "my_metric.py").write_text(USER_METRIC.format(higher="False"))
    (tmp_path / "metrics" / "helper.py").write_text("def column_values(frame):\n    return frame.to_numpy()\n")
    return tmp_path


def test_a_users_metric_file_scores_arrays_and_frames(user_metric):
    target, pred = _multilabel()
    metric = metric_from_spec({"name": "metrics/my_metric.py:score", "power": 2}, user_metric, "multilabel")
    assert (metric.name, metric.higher_is_better, metric.mode) == ("my_metric.py:score", False, "min")
    expected = np.mean((target - pred) ** 2)
    assert metric.compute(target, pred) == pytest.approx(expected)
    solution, submission = arrays_to_frames(target, pred, FrameColumns(id="image_id"))
    assert list(solution.columns) == list(submission.columns) == ["image_id", "target_0", "target_1", "target_2"]
    assert metric.score_frames(solution, submission, "image_id") == pytest.approx(expected)
    assert list(solution.columns)[0] == "image_id", "the user's code deletes the id column of a copy"
    assert metric_from_spec("metrics/my_metric.py", user_metric, "multilabel").compute(target, pred) == pytest.approx(
        np.mean(np.abs(target - pred)))  # the file alone names its `score`


def test_a_users_metric_gets_the_column_names_given():
    solution, submission = arrays_to_frames(np.array([0, 2]), np.eye(3)[[0, 1]],
                                            FrameColumns(id="id", target=("label",), prediction=("a", "b", "c")))
    assert list(solution.columns) == ["id", "label"] and list(submission.columns) == ["id", "a", "b", "c"]
    assert solution["id"].tolist() == submission["id"].tolist() == [0, 1]
    with pytest.raises(KitError, match="2 column names"):
        arrays_to_frames(np.zeros(2), np.zeros((2, 3)), FrameColumns(prediction=("a", "b")))


def test_a_users_metric_survives_pickling_as_ddp_spawn_sends_it(user_metric):
    target, pred = _binary()
    metric = metric_from_spec({"name": "metrics/my_metric.py:score", "power": 3}, user_metric, "binary")
    copy = pickle.loads(pickle.dumps(metric))
    assert copy.compute(target, pred) == pytest.approx(metric.compute(target, pred))
    builtin = metric_from_spec({"name": "pauc", "min_tpr": 0.6}, ".", "binary")
    assert pickle.loads(pickle.dumps(builtin)).compute(target, pred) == builtin.compute(target, pred)


def test_a_users_metric_that_fails_scores_nan_with_a_warning(tmp_path):
    (tmp_path / "one_class.py").write_text("higher_is_better = True\n\n\ndef score(solution, submission, row_id):\n"
                                           "    raise ValueError('Only one class present in y_true.\\nMore.')\n")
    metric = metric_from_spec("one_class.py", tmp_path, "binary")
    with pytest.warns(UserWarning, match="train.metric: one_class.py:score failed, scored NaN: ValueError: Only one "
                                         "class present in y_true.$"):
        assert math.isnan(metric.compute(np.zeros(3), np.ones(3)))


@pytest.mark.parametrize("file_text, spec, message", [
    (None, "nope.py:score", "train.metric: metric file metrics/nope.py not found (looked for "),
    (USER_METRIC.format(higher="True"), "m.py:scores", "train.metric: m.py has no function 'scores' (it defines: "
                                                       "score, other)"),
    (USER_METRIC.format(higher="True").replace("higher_is_better = True", ""), "m.py",
     "train.metric: m.py needs a module-level `higher_is_better = True` (or False)"),
    (USER_METRIC.format(higher="'yes'"), "m.py", "needs a module-level `higher_is_better = True`"),
    ("import not_a_module_anywhere\nhigher_is_better = True\n", "m.py",
     "train.metric: importing m.py failed: ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    ("def score(:\n", "m.py", "train.metric: importing m.py failed: SyntaxError"),
    (USER_METRIC.format(higher="True"), {"name": "m.py", "min_tpr": 0.8},
     "train.metric: m.py:score cannot take min_tpr"),
])
def test_a_bad_metric_file_is_refused_in_one_line(user_metric, file_text, spec, message):
    if file_text is not None:
        (user_metric / "metrics" / "m.py").write_text(file_text)
    spec = {**spec, "name": "metrics/" + spec["name"]} if isinstance(spec, dict) else "metrics/" + spec
    with pytest.raises(KitError) as info:
        metric_from_spec(spec, user_metric, "binary")
    assert message in str(info.value) and "\n" not in str(info.value)
