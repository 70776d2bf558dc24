"""Decision thresholds fitted honestly on OOF predictions: ordinal cut points and probability thresholds.

Ordinal (`fit_cuts`): C-1 increasing cuts on a continuous prediction on the class-index scale, started at k - 0.5
(plain rounding) and moved by a coordinate search that maximises an objective such as QWK, as APTOS 2019 solutions
did (their `OptimizedRounder`, here without the optimiser's randomness or unordered cuts). A prediction is class
k when exactly k cuts are <= it (`apply_cuts`): a value on a cut goes up, as rounding half up does.

Binary and multilabel (`fit_thresholds`): one probability threshold (binary) or one per label, started at 0.5 and
searched the same way; a probability >= its threshold is a positive (`apply_thresholds`).

Search: for each parameter in turn, every position where the decisions can change (midpoints between neighbouring
distinct predictions inside the interval the other parameters leave, at most `max_candidates`, evenly spaced in rank)
is scored; the parameter moves only when the best position strictly beats the current score, and among equally good
positions the one nearest the current value (then the lower) wins. Passes repeat until nothing moves, so the same
inputs always give the same parameters.

Honest CV (`fit_nested`): fold k's OOF rows are decided with parameters fitted on the other folds only, so the CV
computed from those decisions is nested; the test predictions use the parameters fitted on all OOF (in-sample,
never a score). `fit_record` is the JSON-able account the run directory keeps, as `kitpkg blend` marks its weights.

Objectives are callables `objective(target, labels) -> float`, higher is better (e.g. scikit-learn's
`cohen_kappa_score(t, l, weights="quadratic")` or `fbeta_score(t, l, beta=2)`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple

import numpy as np

from .errors import KitError

Objective = Callable[[np.ndarray, np.ndarray], float]

ORDINAL_CUTS = "ordinal_cuts"  # fit_record kinds
THRESHOLDS = "thresholds"
ALL_OOF = "all OOF"
DEFAULT_THRESHOLD = 0.5
MAX_CANDIDATES = 100  # positions tried per parameter and pass: bounds the objective calls of a fit
MAX_PASSES = 50  # guard; each pass that moves a parameter strictly raises the score, so passes end long before
_TIE = 1e-12  # scores closer than this are equal (float noise of a metric must not pick a different position)


def default_cuts(num_classes: int) -> np.ndarray:
    """The C-1 cuts of plain rounding: 0.5, 1.5, ..., C-1.5."""
    if num_classes < 2:
        raise ValueError(f"ordinal cuts need at least 2 classes, got {num_classes}")
    return np.arange(num_classes - 1, dtype=np.float64) + 0.5


def apply_cuts(pred: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Class indices (N,) of continuous predictions: the number of cuts <= each value (below all: 0, above: C-1)."""
    cuts = np.asarray(cuts, dtype=np.float64)
    if cuts.ndim != 1 or np.any(np.diff(cuts) <= 0):
        raise ValueError(f"cuts must be strictly increasing, got {cuts.tolist()}")
    return np.searchsorted(cuts, np.asarray(pred, dtype=np.float64), side="right").astype(np.int64)


def apply_thresholds(pred: np.ndarray, thresholds: Any = DEFAULT_THRESHOLD) -> np.ndarray:
    """0/1 decisions of probabilities: (N,) against one threshold, or (N, L) against one per label (or one for all)."""
    pred = np.asarray(pred, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim and (pred.ndim != 2 or thresholds.shape != (pred.shape[1],)):
        raise ValueError(f"thresholds of shape {thresholds.shape} do not fit predictions of shape {pred.shape}")
    return (pred >= thresholds).astype(np.int64)


def fit_cuts(pred: np.ndarray, target: np.ndarray, num_classes: int, objective: Objective,
             max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Strictly increasing cuts (C-1,) maximising `objective(target, apply_cuts(pred, cuts))`, from default_cuts."""
    pred = _finite(pred, "ordinal predictions").ravel()
    target = np.asarray(target)

    def candidates(i: int, cuts: np.ndarray) -> np.ndarray:
        lo = cuts[i - 1] if i > 0 else -np.inf
        hi = cuts[i + 1] if i + 1 < len(cuts) else np.inf
        inside = pred[(pred > lo) & (pred < hi)]
        # an open side gets a bound one unit past the data (or the cut), so "below/above every value" is a position
        low = lo if np.isfinite(lo) else min(inside.min(initial=cuts[i]), cuts[i]) - 1.0
        high = hi if np.isfinite(hi) else max(inside.max(initial=cuts[i]), cuts[i]) + 1.0
        return _midpoints(np.concatenate([[low], inside, [high]]), lo, hi, max_candidates)

    return _coordinate_search(default_cuts(num_classes), candidates,
                              lambda cuts: objective(target, apply_cuts(pred, cuts)))


def fit_thresholds(pred: np.ndarray, target: np.ndarray, objective: Objective, per_label: bool = False,
                   max_candidates: int = MAX_CANDIDATES) -> Any:
    """Probability threshold(s) maximising `objective(target, apply_thresholds(pred, t))`, from 0.5.

    pred (N,) -> one float; pred (N, L) -> an (L,) array, searched label by label on the whole objective (non-separable
    ones such as a samples-averaged F2 included), or with `per_label` each label alone on objective(target[:, l], ...).
    """
    pred = _finite(pred, "probabilities")
    target = np.asarray(target)
    if pred.ndim == 1:
        return float(_fit_label_thresholds(pred[:, None], target[:, None], lambda t, d: objective(t[:, 0], d[:, 0]),
                                           max_candidates)[0])
    if per_label:
        return np.array([fit_thresholds(pred[:, j], target[:, j], objective, max_candidates=max_candidates)
                         for j in range(pred.shape[1])])
    return _fit_label_thresholds(pred, target, objective, max_candidates)


def _fit_label_thresholds(pred: np.ndarray, target: np.ndarray, objective: Objective, max_candidates: int
                          ) -> np.ndarray:
    # probabilities live in [0, 1]: the extreme positions are "every value above 0 is positive" and "only 1 is"
    positions = [_midpoints(np.concatenate([[0.0], pred[:, j], [1.0]]), -np.inf, np.inf, max_candidates)
                 for j in range(pred.shape[1])]
    start = np.full(pred.shape[1], DEFAULT_THRESHOLD)
    return _coordinate_search(start, lambda j, _: positions[j], lambda t: objective(target, apply_thresholds(pred, t)))


def _midpoints(points: np.ndarray, lo: float, hi: float, max_candidates: int) -> np.ndarray:
    """Midpoints between neighbouring distinct `points`, strictly inside (lo, hi), at most `max_candidates`."""
    values = np.unique(points)
    mids = (values[:-1] + values[1:]) / 2
    mids = mids[(mids > lo) & (mids < hi)]  # two floats one ulp apart have no midpoint strictly between them
    if len(mids) > max_candidates:
        mids = mids[np.unique(np.linspace(0, len(mids) - 1, max_candidates).round().astype(int))]
    return mids


def _coordinate_search(start: np.ndarray, candidates: Callable[[int, np.ndarray], np.ndarray],
                       score: Callable[[np.ndarray], float]) -> np.ndarray:
    """Move one parameter at a time to its best candidate while that strictly raises `score` (see module doc)."""
    params = np.asarray(start, dtype=np.float64).copy()
    best = float(score(params))
    for _ in range(MAX_PASSES):
        moved = False
        for i in range(len(params)):
            values = candidates(i, params)
            if not len(values):
                continue
            scores = np.array([score(_replaced(params, i, v)) for v in values], dtype=np.float64)
            top = np.flatnonzero(scores >= scores.max() - _TIE)
            j = top[np.lexsort((values[top], np.abs(values[top] - params[i])))[0]]  # nearest the current, then lower
            if scores[j] > best + _TIE:
                params[i], best, moved = values[j], float(scores[j]), True
        if not moved:
            break
    return params


def _replaced(params: np.ndarray, i: int, value: float) -> np.ndarray:
    out = params.copy()
    out[i] = value
    return out


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise KitError(f"{what}: {int((~np.isfinite(values)).sum())} values are NaN or infinite; thresholds cannot "
                       f"be fitted on them (a fold diverged?): retrain that fold")
    return values


class NestedFit(NamedTuple):
    """Decisions and parameters of a nested fit (see fit_nested)."""

    labels: np.ndarray  # every OOF row decided with parameters fitted on the other folds only
    params: Any  # fitted on all OOF: for the test predictions
    fold_params: Dict[int, Any]  # fold k: fitted on the folds other than k


def fit_nested(pred: np.ndarray, target: np.ndarray, folds: np.ndarray, fit: Callable[[np.ndarray, np.ndarray], Any],
               apply: Callable[[np.ndarray, Any], np.ndarray]) -> NestedFit:
    """Decide fold k's OOF rows with `fit(pred, target)` on the other folds only; refit on all OOF for the test."""
    folds = np.asarray(folds)
    if len(folds) != len(pred) or len(target) != len(pred):
        raise ValueError(f"pred, target and folds differ in length ({len(pred)}, {len(target)}, {len(folds)})")
    keys = [int(k) for k in np.unique(folds)]
    if len(keys) < 2:
        raise KitError(f"thresholds need OOF predictions of at least 2 folds to be fitted honestly, got folds {keys}")
    labels, fold_params = None, {}
    for k in keys:
        held = folds == k
        fold_params[k] = fit(pred[~held], target[~held])
        decided = np.asarray(apply(pred[held], fold_params[k]))
        if labels is None:
            labels = np.zeros((len(pred),) + decided.shape[1:], dtype=decided.dtype)
        labels[held] = decided
    return NestedFit(labels, fit(pred, target), fold_params)


def fit_record(kind: str, fitted: NestedFit) -> Dict[str, Any]:
    """What was fitted, JSON-able: kind, the parameters on all OOF (the test's) and those without each fold."""
    folds: List[Dict[str, Any]] = [{"fold": k, "params": _jsonable(p), "fitted_on": f"folds other than {k}"}
                                   for k, p in sorted(fitted.fold_params.items())]
    return {"kind": kind, "params": _jsonable(fitted.params), "fitted_on": ALL_OOF, "folds": folds,
            "note": "the OOF decisions (and the CV) of fold k use the parameters fitted on the other folds; the test "
                    "predictions use those fitted on all OOF, whose in-sample score is optimistic and not a CV"}


def _jsonable(params: Any) -> Any:
    """Floats or lists of floats (numpy scalars and arrays made plain)."""
    array = np.asarray(params, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()
