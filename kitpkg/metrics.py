"""Metrics by name (`train.metric`) on the canonical arrays of each task kind, and the ROC curve / AUC that fold
scores, the report and blends are measured with (torchmetrics: any score scale, ties exact).

Canonical arrays (target, prediction) per task kind:
  binary, score_class  (N,) 0/1               (N,) probability of the positive class
  multiclass           (N,) class index        (N, C) class probabilities
  multilabel           (N, L) 0/1              (N, L) independent probabilities
  regression           (N,) or (N, K) floats   the same shape
  ordinal              (N,) class index        (N,) value on the class-index scale
  soft                 (N, C) distribution     (N, C) probabilities

`METRICS` holds every built-in, one entry each: its formula, direction, the kinds it scores, whether it scores label
decisions or the scores themselves, and its parameters. Decisions: a threshold for binary and multilabel (default
0.5, a score at the threshold is positive), argmax for multiclass and soft (the soft target too), cuts for ordinal
(default k - 0.5: round half up, clipped to the classes). `metric_from_spec` turns the config value into a `Metric`:
`auc`, `{name: pauc, min_tpr: 0.8}`, or `my_metric.py:score` -- a user's file of Kaggle metric code (metric_file.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import KitError

KINDS = ("binary", "score_class", "multiclass", "multilabel", "regression", "ordinal", "soft")
_DEFAULTS = {"binary": "auc", "score_class": "auc", "multiclass": "accuracy", "multilabel": "mean_auc",
             "regression": "rmse", "ordinal": "qwk", "soft": "kl"}
_ONE_D = ("binary", "score_class", "ordinal")  # both arrays (N,)
_PROBABILITY_EPS = 1e-15  # Kaggle's clip for log loss and KL: no infinite loss, no games with the 20th decimal
_REQUIRED = object()  # a parameter default: the spec must give it


def roc_curve(target: np.ndarray, score: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1) (torchmetrics)."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(*_as_tensors(target, score))
    return fpr.numpy(), tpr.numpy()


def auc(target: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (ties count one half, torchmetrics); NaN when only one class is present."""
    from torchmetrics.functional.classification import binary_auroc

    y = np.asarray(target) > 0.5
    if y.all() or not y.any():
        return float("nan")
    return float(binary_auroc(*_as_tensors(target, score)))


def _as_tensors(target: np.ndarray, score: np.ndarray):
    import torch

    # torchmetrics passes scores outside [0, 1] through a sigmoid, whose float rounding can merge or split ties;
    # dense ranks scaled into [0, 1] keep the order and every tie exactly, so any score (logits too) gives the true AUC
    _, ranks = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True)
    scaled = ranks / max(int(ranks.max(initial=0)), 1)
    return torch.as_tensor(scaled, dtype=torch.float64), torch.as_tensor(np.asarray(target) > 0.5).long()


# --- formulas: (target, pred, kind, **params) -> float, on canonical arrays or (decision metrics) on labels --------
def _pauc(target, pred, kind, min_tpr):
    """ISIC 2024's partial AUC above `min_tpr`, in [0, 1 - min_tpr]; NaN without both classes."""
    y = np.asarray(target) > 0.5
    if y.all() or not y.any():
        return float("nan")
    # as Kaggle's metric: swap the classes and negate the scores, so this curve's FPR is 1 - TPR of the original, and
    # take its area left of FPR = 1 - min_tpr (the curve cut there by linear interpolation)
    fpr, tpr = _roc64(~y, -np.asarray(pred, dtype=np.float64))
    max_fpr = 1.0 - min_tpr
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    x = np.append(fpr[:stop], max_fpr)
    y_at = np.append(tpr[:stop], np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1]))
    return float(np.sum(np.diff(x) * (y_at[1:] + y_at[:-1]) / 2))


def _roc64(positive: np.ndarray, score: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) in float64 at every distinct score, from (0, 0) (torchmetrics' ROC is float32)."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last = np.append(np.flatnonzero(np.diff(score)), len(score) - 1)  # the last sample of each distinct score
    tps = np.cumsum(positive)[last]
    fps = last + 1 - tps
    return np.append(0.0, fps / fps[-1]), np.append(0.0, tps / tps[-1])


def _mean_auc(target, pred, kind):
    """Column-wise ROC AUC averaged over the columns holding both classes (multiclass: one-vs-rest); NaN if none."""
    columns = np.eye(pred.shape[1])[target.astype(np.int64)] if kind == "multiclass" else target
    scores = [auc(columns[:, j], pred[:, j]) for j in range(pred.shape[1])]
    scored = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scored)) if scored else float("nan")


def _logloss(target, pred, kind):
    """Mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15] (multiclass rows renormalised)."""
    p = np.clip(np.asarray(pred, dtype=np.float64), _PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
    if kind == "multiclass":
        p = p / p.sum(axis=1, keepdims=True)
        return float(-np.mean(np.log(p[np.arange(len(p)), target.astype(np.int64)])))
    t = np.asarray(target, dtype=np.float64)  # multilabel: the mean over every label of every sample
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def _kl(target, pred, kind):
    """KL(target || pred) summed over columns, averaged over rows: HMS 2024's metric (Kaggle's kl_divergence)."""
    t = np.asarray(target, dtype=np.float64)
    # Kaggle clips the submission only, without renormalising it; a zero target term counts 0 (scipy's rel_entr)
    q = np.clip(np.asarray(pred, dtype=np.float64), _PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t != 0, t * np.log(t / q), 0.0)
    return float(terms.sum(axis=1).mean())


def _rmse(target, pred, kind):
    from torchmetrics.functional import mean_squared_error

    return float(mean_squared_error(*_tensors(pred, target), squared=False))


def _mae(target, pred, kind):
    from torchmetrics.functional import mean_absolute_error

    return float(mean_absolute_error(*_tensors(pred, target)))


def _accuracy(target, pred, kind):
    """The share of samples decided right (multilabel: every label of the sample right)."""
    right = target == pred
    return float(np.mean(right.all(axis=1) if right.ndim == 2 else right))


def _balanced_accuracy(target, pred, kind):
    """Recall averaged over the classes present in the target."""
    return float(np.mean([np.mean(pred[target == c] == c) for c in np.unique(target)]))


def _fbeta(target, pred, kind, beta, average):
    """F-beta of the decisions: binary its positive class; multiclass and multilabel averaged by `average`."""
    from torchmetrics.functional.classification import (binary_fbeta_score, multiclass_fbeta_score,
                                                        multilabel_fbeta_score)

    p, t = _tensors(pred, target, dtype=None)
    if kind in ("binary", "score_class"):
        return float(binary_fbeta_score(p, t, beta=float(beta)))
    if kind == "multilabel" and average == "samples":
        return _samples_fbeta(target, pred, beta)
    if kind == "multilabel":
        return float(multilabel_fbeta_score(p, t, beta=float(beta), num_labels=target.shape[1], average=average))
    # classes absent from both target and decisions are left out of the macro average (as scikit-learn's)
    classes = int(max(target.max(), pred.max())) + 1
    return float(multiclass_fbeta_score(p, t, beta=float(beta), num_classes=classes, average=average))


def _samples_fbeta(target, pred, beta) -> float:
    """Each sample's F-beta over its labels, averaged (a sample with no label true or decided counts 0)."""
    t, p = target.astype(bool), pred.astype(bool)
    tp, fn, fp = (t & p).sum(axis=1), (t & ~p).sum(axis=1), (~t & p).sum(axis=1)
    b2 = float(beta) ** 2
    denominator = (1 + b2) * tp + b2 * fn + fp
    return float(np.mean(np.where(denominator > 0, (1 + b2) * tp / np.maximum(denominator, 1), 0.0)))


def _qwk(target, pred, kind):
    """Quadratic weighted Cohen's kappa of the decisions; NaN when undefined (one class in both)."""
    from torchmetrics.functional.classification import multiclass_cohen_kappa

    classes = int(max(target.max(), pred.max())) + 1  # classes above every label change nothing
    return float(multiclass_cohen_kappa(*_tensors(pred, target, dtype=None), num_classes=classes, weights="quadratic"))


def _tensors(*arrays, dtype=np.float64):
    import torch

    # C-ordered copies: an array may be read-only (torch warns) or Fortran-ordered (a DataFrame's (N, K) values,
    # which torchmetrics cannot view flat)
    return tuple(torch.as_tensor(np.array(a, dtype=dtype, order="C")) for a in arrays)


# --- the registry ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    formula: Callable[..., float]
    higher_is_better: bool
    kinds: FrozenSet[str]
    decisions: bool  # scores label decisions (threshold, argmax, ordinal cuts), not the scores themselves
    params: Mapping[str, Any] = field(default_factory=dict)  # name -> default (_REQUIRED: the spec must give it)


# adding a metric is one entry of METRICS (and, for a parameter no metric had, one check in _PARAM_CHECKS)
_BINARY = frozenset({"binary", "score_class"})
_CLASS_KINDS = _BINARY | {"multiclass", "ordinal", "soft"}
_AVERAGE = {"average": "macro"}
METRICS: Dict[str, _Entry] = {
    "auc": _Entry(lambda t, p, kind: auc(t, p), True, _BINARY, False),
    "pauc": _Entry(_pauc, True, _BINARY, False, {"min_tpr": 0.8}),
    "accuracy": _Entry(_accuracy, True, _CLASS_KINDS | {"multilabel"}, True),
    "balanced_accuracy": _Entry(_balanced_accuracy, True, _CLASS_KINDS, True),
    "f1": _Entry(lambda t, p, kind, average: _fbeta(t, p, kind, 1.0, average), True,
                 _CLASS_KINDS | {"multilabel"}, True, _AVERAGE),
    "fbeta": _Entry(_fbeta, True, _CLASS_KINDS | {"multilabel"}, True, {"beta": _REQUIRED, **_AVERAGE}),
    "logloss": _Entry(_logloss, False, _BINARY | {"multiclass", "multilabel"}, False),
    "mean_auc": _Entry(_mean_auc, True, frozenset({"multiclass", "multilabel"}), False),
    "qwk": _Entry(_qwk, True, frozenset({"ordinal", "multiclass"}), True),
    "rmse": _Entry(_rmse, False, frozenset({"regression", "ordinal"}), False),
    "mae": _Entry(_mae, False, frozenset({"regression", "ordinal"}), False),
    "kl": _Entry(_kl, False, frozenset({"soft"}), False),
}


class Metric:
    """A metric bound to a task kind: its name, direction, and its score of canonical arrays or Kaggle frames."""

    name: str
    kind: str
    higher_is_better: bool
    needs: str  # "decisions" (labels: thresholds / argmax / cuts) or "scores"

    def compute(self, target: np.ndarray, pred: np.ndarray) -> float:
        """The score of canonical arrays (NaN when they cannot be scored, e.g. one class for an AUC)."""
        raise NotImplementedError

    def score_frames(self, solution: Any, submission: Any, id_col: str) -> float:
        """The score of Kaggle frames: solution = id + target column(s), submission = id + prediction column(s)."""
        raise NotImplementedError

    @property
    def mode(self) -> str:
        """Lightning's mode (ModelCheckpoint, EarlyStopping): max when higher is better, else min."""
        return "max" if self.higher_is_better else "min"

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` is strictly better than `b`; a number beats NaN, NaN beats nothing."""
        return self.sort_key(a) < self.sort_key(b)

    def sort_key(self, value: float) -> float:
        """A key that sorts scores best first, NaN last (`sorted(scores, key=metric.sort_key)`)."""
        value = float(value)
        if math.isnan(value):
            return math.inf
        return -value if self.higher_is_better else value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, kind={self.kind!r})"


class BuiltinMetric(Metric):
    """A metric of `METRICS` with its checked parameters."""

    def __init__(self, name: str, kind: str, params: Mapping[str, Any], num_classes: Optional[int] = None):
        entry = METRICS[name]  # the entry is looked up, not kept: its lambdas would not pickle (DDP spawn)
        self.name, self.kind, self.num_classes = name, kind, num_classes
        self.higher_is_better, self.needs = entry.higher_is_better, "decisions" if entry.decisions else "scores"
        self.params = dict(params)

    def compute(self, target: np.ndarray, pred: np.ndarray) -> float:
        """The score of canonical arrays (NaN when they cannot be scored, e.g. one class for an AUC)."""
        target, pred = check_arrays(self.name, self.kind, target, pred)
        if not len(target):
            return float("nan")
        params = dict(self.params)
        if self.needs == "decisions":
            target, pred = label_decisions(self.kind, target, pred, params.pop("threshold", None), self.num_classes)
        return float(METRICS[self.name].formula(target, pred, self.kind, **params))

    def score_frames(self, solution: Any, submission: Any, id_col: str) -> float:
        """The score of Kaggle frames: solution = id + target column(s), submission = id + prediction column(s)."""
        from .metric_file import frames_to_arrays

        return self.compute(*frames_to_arrays(solution, submission, id_col, self.kind))


def default_metric(kind: str) -> str:
    """The metric a task kind is scored by when `train.metric` is not set."""
    return _DEFAULTS[_checked_kind(kind)]


def metrics_for(kind: str) -> List[str]:
    """The built-in metrics that score a task kind."""
    return [name for name, entry in METRICS.items() if _checked_kind(kind) in entry.kinds]


def metric_from_spec(spec: Union[None, str, Mapping[str, Any]], base_dir: Union[str, Path], kind: str, *,
                     num_classes: Optional[int] = None, columns: Any = None) -> Metric:
    """The `Metric` a `train.metric` value names for a task kind (None: the kind's default); KitError if unusable.

    `base_dir`: the config's folder (a metric file's path is relative to it); `num_classes`: the class count, which
    ordinal decisions are clipped to (default: the largest target seen + 1); `columns`: a `metric_file.FrameColumns`
    naming the frames a user's metric is given (default: id, target...)."""
    name, params = _split_spec(default_metric(kind) if spec is None else spec)
    if is_metric_file(name):
        from .metric_file import load_user_metric

        return load_user_metric(name, base_dir, _checked_kind(kind), params, columns)
    if name not in METRICS:
        raise KitError(f"train.metric: unknown metric {name!r}; use one of {', '.join(METRICS)}, "
                       f"or a file of your own (my_metric.py:score)")
    entry = METRICS[name]
    if _checked_kind(kind) not in entry.kinds:
        scores = ", ".join(sorted(entry.kinds))
        raise KitError(f"train.metric: {name} does not score a {kind} task (it scores {scores}); "
                       f"for {kind} use one of {', '.join(metrics_for(kind))}")
    return BuiltinMetric(name, kind, _checked_params(name, entry, kind, params), num_classes)


def is_metric_file(name: str) -> bool:
    """Whether a train.metric name is a user's metric file (`my_metric.py` or `my_metric.py:score`)."""
    return name.strip().endswith(".py") or ".py:" in name


# names in tables and reports; a metric not listed shows its name
_DISPLAY_NAMES = {"auc": "AUC", "pauc": "pAUC", "mean_auc": "mean AUC", "rmse": "RMSE", "mae": "MAE", "qwk": "QWK",
           "kl": "KL", "f1": "F1", "fbeta": "F-beta", "logloss": "log loss", "balanced_accuracy": "balanced accuracy"}
_KEYS = {"accuracy": "val_acc"}  # logged keys older runs and checkpoints hold; the others are val_<name>


def metric_label(name: str) -> str:
    """A metric's name in tables and reports ("AUC"; a user's file: its file name and function, my_metric.py:score)."""
    if is_metric_file(name):
        file, sep, function = name.partition(":")
        return Path(file).name + sep + function
    return _DISPLAY_NAMES.get(name, name)


def metric_key(name: str) -> str:
    """The validation key a metric is logged and monitored as: val_<name> (accuracy: val_acc; a user's file
    my_metric.py:score: val_my_metric, another function f of it: val_my_metric_f)."""
    if is_metric_file(name):
        file, _, function = name.partition(":")
        stem = Path(file).stem + ("" if function.strip() in ("", "score") else "_" + function.strip())
        return "val_" + "".join(c if c.isalnum() else "_" for c in stem)
    return _KEYS.get(name, f"val_{name}")


def metric_keys() -> List[str]:
    """The validation keys of every built-in metric (what train.monitor may name besides val_loss)."""
    return [metric_key(name) for name in METRICS]


def _split_spec(spec: Union[str, Mapping[str, Any]]) -> Tuple[str, Dict[str, Any]]:
    if isinstance(spec, str) and spec.strip():
        return spec.strip(), {}
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return spec["name"].strip(), {k: v for k, v in spec.items() if k != "name"}
    raise KitError(f"train.metric: {spec!r} is not a metric; give a name (auc), a mapping with its parameters "
                   f"({{name: pauc, min_tpr: 0.8}}) or a file of your own (my_metric.py:score)")


def _checked_kind(kind: str) -> str:
    if kind not in KINDS:
        raise KitError(f"train.metric: unknown task kind {kind!r} (kinds: {', '.join(KINDS)})")
    return kind


def _checked_params(name: str, entry: _Entry, kind: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    """The entry's defaults overridden by `params`, each value checked; unknown or missing ones refused."""
    allowed = {**entry.params, **({"threshold": None} if entry.decisions else {})}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
        raise KitError(f"train.metric: {name} {takes} (got {', '.join(unknown)})")
    values = {**allowed, **params}
    missing = [k for k, v in values.items() if v is _REQUIRED]
    if missing:
        raise KitError(f"train.metric: {name} needs {', '.join(missing)} (e.g. {{name: {name}, {missing[0]}: 2}})")
    for key, value in params.items():
        problem = _PARAM_CHECKS[key](value, kind) if key in _PARAM_CHECKS else None
        if problem:
            raise KitError(f"train.metric: {name}'s {key} {problem} (got {value!r})")
    return values


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_threshold(value, kind) -> Optional[str]:
    if kind in ("multiclass", "soft"):
        return f"does not apply: a {kind} task decides by argmax"
    if kind == "ordinal":
        ok = isinstance(value, Sequence) and all(map(_number, value)) and list(value) == sorted(value) and value
        return None if ok else "must be the ascending cuts between classes (e.g. [0.5, 1.5, 2.5])"
    if _number(value) or (kind == "multilabel" and isinstance(value, Sequence) and value and all(map(_number, value))):
        return None
    return "must be a number" + (" or a list of one per label" if kind == "multilabel" else "")


_PARAM_CHECKS: Dict[str, Callable[[Any, str], Optional[str]]] = {
    "min_tpr": lambda v, kind: None if _number(v) and 0 < v < 1 else "must be a number between 0 and 1 (exclusive)",
    "beta": lambda v, kind: None if _number(v) and v > 0 else "must be a positive number",
    "average": lambda v, kind: ("must be one of macro, micro, samples" if v not in ("macro", "micro", "samples")
                                else "samples needs a multilabel task" if v == "samples" and kind != "multilabel"
                                else None),
    "threshold": _check_threshold,
}


def label_decisions(kind: str, target: np.ndarray, pred: np.ndarray, threshold: Any = None,
                    num_classes: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(true labels, decided labels) of canonical arrays: binary / multilabel 0/1 by `threshold` (default 0.5),
    multiclass / soft class indices by argmax, ordinal class indices by the ascending cuts `threshold` (default
    k - 0.5, clipped to `num_classes` or to the largest target + 1)."""
    if kind in ("binary", "score_class", "multilabel"):
        cut = np.asarray(0.5 if threshold is None else threshold, dtype=np.float64)
        if cut.ndim and (pred.ndim != 2 or len(cut) != pred.shape[1]):
            raise KitError(f"train.metric: threshold has {len(cut)} values for {pred.shape[-1]} labels")
        return (np.asarray(target) > 0.5).astype(np.int64), (pred >= cut).astype(np.int64)
    if kind == "ordinal":
        target = np.rint(target).astype(np.int64)
        classes = num_classes or int(target.max(initial=0)) + 1
        cuts = np.arange(classes - 1) + 0.5 if threshold is None else np.asarray(threshold, dtype=np.float64)
        return target, np.searchsorted(cuts, pred, side="right").astype(np.int64)
    if kind in ("multiclass", "soft"):
        target = target.argmax(axis=1) if target.ndim == 2 else np.rint(target)
        return target.astype(np.int64), pred.argmax(axis=1).astype(np.int64)
    raise KitError(f"train.metric: a {kind} task has no label decisions")


def check_arrays(name: str, kind: str, target: Any, pred: Any) -> Tuple[np.ndarray, np.ndarray]:
    """`target`, `pred` as numpy arrays; KitError naming the metric and kind unless they have the kind's shapes."""
    t, p = np.asarray(target), np.asarray(pred)
    if kind in _ONE_D:
        ok, wanted = t.ndim == 1 and p.ndim == 1, "(N,) and (N,)"
    elif kind == "multiclass":
        ok, wanted = t.ndim == 1 and p.ndim == 2, "(N,) and (N, C)"
    elif kind in ("multilabel", "soft"):
        ok, wanted = t.ndim == 2 and t.shape == p.shape, "(N, C) and (N, C)"
    else:
        ok, wanted = t.ndim in (1, 2) and t.shape == p.shape, "(N,) or (N, K), the same for both"
    if not ok or len(t) != len(p):
        raise KitError(f"train.metric {name}: a {kind} task scores target and prediction of shapes {wanted}; "
                       f"got {t.shape} and {p.shape}")
    return t, p
