"""Thresholds fitted on OOF: ordinal cuts, probability thresholds, the nested (honest) CV and its record."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kitpkg.errors import KitError
from kitpkg.thresholds import (ALL_OOF, ORDINAL_CUTS, THRESHOLDS, apply_cuts, apply_thresholds, default_cuts,
                               fit_cuts, fit_nested, fit_record, fit_thresholds)

metrics = pytest.importorskip("sklearn.metrics")


def qwk(target, labels):
    return metrics.cohen_kappa_score(target, labels, weights="quadratic")


def f2(target, labels):
    return metrics.fbeta_score(target, labels, beta=2, zero_division=0)


def accuracy(target, labels):
    return float(np.mean(np.asarray(target) == np.asarray(labels)))


def shrunk_ordinal(n=150, classes=5, seed=0):
    """Targets 0..C-1 and predictions 0.6 * target + noise under 0.1: rounding errs, cuts at 0.6k - 0.3 are perfect."""
    rng = np.random.default_rng(seed)
    target = np.arange(n) % classes
    return 0.6 * target + rng.uniform(-0.09, 0.09, n), target


def test_default_cuts_are_rounding_half_up_and_clipping():
    values = np.random.default_rng(1).uniform(-2, 6, 500)
    values[:4] = [0.5, 1.5, 2.5, 3.5]  # on a cut: the upper class, as floor(x + 0.5)
    expected = np.clip(np.floor(values + 0.5), 0, 4)
    np.testing.assert_array_equal(apply_cuts(values, default_cuts(5)), expected)
    np.testing.assert_array_equal(apply_cuts([-9.0, 0.49, 0.5, 9.0], [0.5, 1.5]), [0, 0, 1, 2])


def test_apply_cuts_refuses_unordered_cuts():
    with pytest.raises(ValueError, match="strictly increasing"):
        apply_cuts([0.3], [1.5, 0.5])


def test_fitted_cuts_beat_rounding_on_shrunk_predictions():
    pred, target = shrunk_ordinal()
    rounded = qwk(target, apply_cuts(pred, default_cuts(5)))
    cuts = fit_cuts(pred, target, 5, qwk)
    assert rounded < 0.95
    assert qwk(target, apply_cuts(pred, cuts)) == pytest.approx(1.0)  # perfect cuts exist (0.3, 0.9, 1.5, 2.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuts_stay_strictly_increasing_on_noise(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, 120)  # predictions unrelated to the target: the search pulls cuts every way
    pred = rng.normal(1.5, 2.0, 120)
    cuts = fit_cuts(pred, target, 5, qwk)  # class 4 never occurs in the target
    assert cuts.shape == (4,)
    assert np.all(np.diff(cuts) > 0)


def test_fits_are_deterministic_and_ignore_row_order():
    pred, target = shrunk_ordinal(seed=3)
    pred = pred + np.random.default_rng(3).normal(0, 0.4, len(pred))  # no perfect cuts: many near-ties
    perm = np.random.default_rng(4).permutation(len(pred))
    first = fit_cuts(pred, target, 5, qwk)
    np.testing.assert_array_equal(first, fit_cuts(pred, target, 5, qwk))
    np.testing.assert_array_equal(first, fit_cuts(pred[perm], target[perm], 5, qwk))


def test_equally_good_cuts_resolve_to_the_one_nearest_the_start():
    # the start 0.5 scores 2/4; 0.2 (0.1 | 0.3, 0.6, 0.8) and 0.7 (0.1, 0.3, 0.6 | 0.8) both 3/4: 0.7 is nearer 0.5
    cuts = fit_cuts(np.array([0.1, 0.3, 0.6, 0.8]), np.array([0, 1, 0, 1]), 2, accuracy)
    np.testing.assert_allclose(cuts, [0.7])


def test_a_start_that_is_already_best_does_not_move():
    cuts = fit_cuts(np.array([0.1, 0.2, 1.8, 1.9]), np.array([0, 0, 1, 1]), 2, accuracy)
    np.testing.assert_array_equal(cuts, [0.5])


def test_binary_threshold_reaches_the_best_f2_of_any_threshold():
    rng = np.random.default_rng(5)
    target = (rng.random(80) < 0.3).astype(int)
    pred = np.clip(0.25 * target + rng.random(80) * 0.7, 0, 1)
    best = max(f2(target, (pred >= t).astype(int)) for t in np.unique(pred))  # brute force over every cut
    threshold = fit_thresholds(pred, target, f2)
    assert isinstance(threshold, float)
    assert f2(target, apply_thresholds(pred, threshold)) == pytest.approx(best)
    assert f2(target, apply_thresholds(pred)) < best


def test_multilabel_thresholds_per_label_and_on_a_samples_objective():
    rng = np.random.default_rng(6)
    target = (rng.random((200, 3)) < [0.2, 0.4, 0.6]).astype(int)
    pred = np.clip(target * [0.3, 0.2, 0.1] + rng.random((200, 3)) * 0.6, 0, 1)

    def macro(t, d):
        return metrics.fbeta_score(t, d, beta=2, average="macro", zero_division=0)

    def samples(t, d):
        return metrics.fbeta_score(t, d, beta=2, average="samples", zero_division=0)

    joint = fit_thresholds(pred, target, macro)
    alone = fit_thresholds(pred, target, f2, per_label=True)
    np.testing.assert_allclose(joint, alone)  # a separable objective: the joint search finds each label's own best
    for j in range(3):
        assert alone[j] == fit_thresholds(pred[:, j], target[:, j], f2)
    fitted = fit_thresholds(pred, target, samples)
    assert fitted.shape == (3,)
    assert samples(target, apply_thresholds(pred, fitted)) > samples(target, apply_thresholds(pred)) + 0.05


def test_nested_fit_never_uses_a_folds_own_rows():
    # folds 1, 2 separate at 0.5; fold 0's positives sit at 0.45: only its own rows could pull the threshold below them
    target = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    folds = np.repeat([0, 1, 2], 4)
    pred = np.where(target == 1, 0.8, 0.2)
    pred[:4] = np.where(target[:4] == 1, 0.45, 0.1)
    nested = fit_nested(pred, target, folds, lambda p, t: fit_thresholds(p, t, f2), apply_thresholds)
    assert nested.fold_params[0] == 0.5
    np.testing.assert_array_equal(nested.labels[:4], 0)  # fold 0 is missed, as a new fold like it would be
    np.testing.assert_array_equal(nested.labels[4:], target[4:])
    assert nested.params == pytest.approx((0.2 + 0.45) / 2)  # all OOF: between the highest negative and 0.45
    np.testing.assert_array_equal(apply_thresholds(pred, nested.params), target)  # in-sample it would look perfect


def test_nested_fit_sees_exactly_the_other_folds():
    pred, target = shrunk_ordinal(n=60)
    folds = np.arange(60) % 3
    seen = []

    def spy_fit(p, t):
        seen.append(set(np.round(p, 12)))
        return fit_cuts(p, t, 5, qwk, max_candidates=20)

    nested = fit_nested(pred, target, folds, spy_fit, apply_cuts)
    for k in range(3):
        assert seen[k] == set(np.round(pred[folds != k], 12))
        np.testing.assert_array_equal(nested.labels[folds == k], apply_cuts(pred[folds == k], nested.fold_params[k]))
    assert seen[3] == set(np.round(pred, 12))
    assert nested.labels.dtype == np.int64


def test_nested_fit_needs_two_folds():
    with pytest.raises(KitError, match="at least 2 folds"):
        fit_nested(np.zeros(4), np.zeros(4), np.zeros(4), lambda p, t: 0.5, apply_thresholds)


def test_non_finite_predictions_are_refused():
    with pytest.raises(KitError, match="NaN or infinite"):
        fit_cuts(np.array([0.0, np.nan]), np.array([0, 1]), 2, qwk)


def test_fit_record_is_json_and_says_what_each_fit_saw():
    pred, target = shrunk_ordinal(n=60)
    folds = np.arange(60) % 3
    nested = fit_nested(pred, target, folds, lambda p, t: fit_cuts(p, t, 5, qwk, max_candidates=20), apply_cuts)
    record = fit_record(ORDINAL_CUTS, nested)
    assert json.loads(json.dumps(record)) == record
    assert record["kind"] == ORDINAL_CUTS and record["fitted_on"] == ALL_OOF
    assert record["params"] == nested.params.tolist()
    assert [f["fitted_on"] for f in record["folds"]] == [f"folds other than {k}" for k in range(3)]
    assert [f["params"] for f in record["folds"]] == [nested.fold_params[k].tolist() for k in range(3)]
    binary = fit_nested(pred / 3, target > 1, folds, lambda p, t: fit_thresholds(p, t, f2), apply_thresholds)
    assert isinstance(fit_record(THRESHOLDS, binary)["params"], float)
