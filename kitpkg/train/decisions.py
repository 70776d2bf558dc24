"""Label decisions of a finished CV and the submission they cut: thresholds fitted honestly on the OOF predictions.

When the run's metric scores label decisions (the registry's `needs == "decisions"`: qwk, f1, fbeta, accuracy,
balanced_accuracy) and the kind decides by thresholds (ordinal: cuts; binary, train.score_class, multilabel: one
probability threshold, or one per label), `fit_decisions` fits them on the OOF with the metric as objective, nested
over the folds (kitpkg/thresholds.py `fit_nested`): fold k's rows are decided with thresholds fitted on the other folds
only, and the CV reported is the metric of those decisions; the submission uses the thresholds fitted on all OOF
(in-sample: never a score). A multi-label submission whose sample holds one column of space-separated labels
(Planet's `tags`) needs decisions whatever the metric: with a metric that scores scores (mean_auc), each label's
threshold maximises that label's F1 (the usual choice there; the CV stays the metric's). A metric given with its own
`threshold` parameter keeps it, and a run of one fold keeps the defaults (with a warning): nothing is fitted.
Multiclass and soft decide by argmax: nothing to fit.
thresholds.json (RunDir.thresholds) records what was fitted and how; `kitpkg predict` reads it (`thresholds_for_test`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import KitError
from ..fsutil import atomic_write_text
from ..predictions import one_dimensional, read_predictions
from ..rundir import RunDir
from ..submission import Sample, read_sample, submission_frame
from ..task import Task
from ..thresholds import (ORDINAL_CUTS, THRESHOLDS, NestedFit, apply_cuts, apply_thresholds, fit_cuts, fit_nested,
                          fit_record, fit_thresholds)

THRESHOLD_KINDS = ("binary", "score_class", "multilabel", "ordinal")  # kinds whose decisions thresholds make
TAGS_OBJECTIVE = "f1"  # per label, for a tags submission when the metric scores scores


@dataclass
class Decisions:
    """Thresholds fitted on the OOF: the test's (`params`, all OOF), the record for thresholds.json, and the nested
    CV of the metric (fold -> score of fold k decided with thresholds fitted on the other folds; None when the CV
    metric does not score decisions: a tags submission of a mean_auc run)."""

    kind: str  # thresholds.ORDINAL_CUTS or THRESHOLDS
    params: Any
    record: Dict[str, Any]
    scores: Optional[Dict[int, float]] = None
    pooled: Optional[float] = None
    default_mean: Optional[float] = None  # the same folds decided by the default thresholds (0.5, k - 0.5 cuts)

    def describe(self) -> str:
        """How the CV's decisions were made, in words (the CV line and state.json's cv.decisions)."""
        what = "ordinal cuts" if self.kind == ORDINAL_CUTS else "thresholds"
        default = "" if self.default_mean is None else f"; with the default {what}: {self.default_mean:.4f}"
        return f"{what} fitted on the other folds (nested; the test's on all OOF: thresholds.json){default}"


def _objective(name: str, kind: str, params: Dict[str, Any], sign: float):
    """objective(target, labels) -> higher is better: the registry formula of `name` on decided labels."""
    from ..metrics import METRICS

    formula = METRICS[name].formula
    return lambda target, labels: sign * float(formula(_labels_of(kind, target), labels, kind, **params))


def _labels_of(kind: str, target: np.ndarray) -> np.ndarray:
    """True labels of a canonical target: class indices (ordinal), 0/1 (binary, multilabel)."""
    target = np.asarray(target)
    return np.rint(target).astype(np.int64) if kind == "ordinal" else (target > 0.5).astype(np.int64)


def decision_metric(task: Task) -> Optional[Tuple[str, Dict[str, Any], float]]:
    """(name, parameters, sign) of the run's metric when thresholds are fitted for it (module docstring), else None."""
    scorer = task.scorer()
    params = dict(getattr(scorer, "params", {}))
    if scorer.needs != "decisions" or task.metric_kind not in THRESHOLD_KINDS or params.pop("threshold", None) \
            is not None:
        return None
    return scorer.name, params, 1.0 if scorer.higher_is_better else -1.0


def is_tags(sample: Optional[Sample], task: Task) -> bool:
    """Whether a multi-label submission goes into one column of space-separated labels (Planet's tags)."""
    return sample is not None and task.kind == "multilabel" and len(sample.columns) == 1 \
        and sample.columns[0] not in task.labels


def fit_decisions(task: Task, oof: pd.DataFrame, sample: Optional[Sample] = None) -> Optional[Decisions]:
    """Thresholds fitted nested over the folds of `oof` (oof.csv's frame) when the run's decisions need them, else
    None (module docstring)."""
    kind = task.metric_kind
    metric = decision_metric(task)
    if metric is None and not is_tags(sample, task):
        return None
    rows = read_predictions(oof, task)
    if len(np.unique(rows.fold)) < 2:
        import warnings

        warnings.warn("kitpkg: the run has one fold, so thresholds cannot be fitted on other folds than the ones they "
                      "decide: its CV and submission use the default ones (0.5; ordinal: k - 0.5 cuts)",
                      RuntimeWarning, stacklevel=2)
        return None
    if metric is None:  # tags of a run scored by scores: each label's F1
        objective = _objective(TAGS_OBJECTIVE, "binary", {"average": "macro"}, 1.0)
        fit = lambda p, t: fit_thresholds(p, t, objective, per_label=True)  # noqa: E731
        name = f"{TAGS_OBJECTIVE} per label"
    elif kind == "ordinal":
        objective = _objective(metric[0], kind, metric[1], metric[2])
        fit = lambda p, t: fit_cuts(p, t, task.num_classes, objective)  # noqa: E731
        name = _described(metric)
    else:
        objective = _objective(metric[0], kind, metric[1], metric[2])
        fit = lambda p, t: fit_thresholds(p, t, objective)  # noqa: E731
        name = _described(metric)
    apply = apply_cuts if kind == "ordinal" else apply_thresholds
    fitted = fit_nested(rows.pred, rows.target, rows.fold, fit, apply)
    record_kind = ORDINAL_CUTS if kind == "ordinal" else THRESHOLDS
    record = {**fit_record(record_kind, fitted), "objective": name,
              "labels": list(task.labels) if task.kind == "multilabel" else None}
    decisions = Decisions(record_kind, fitted.params, record)
    if metric is not None:
        _score_nested(decisions, fitted, rows, kind, metric, apply, task)
        record["nested_cv"] = {"folds": {str(k): _null(v) for k, v in decisions.scores.items()},
                               "pooled": _null(decisions.pooled)}
    return decisions


def _described(metric: Tuple[str, Dict[str, Any], float]) -> str:
    """The objective in words: the metric's name and its parameters (fbeta {'beta': 2, 'average': 'macro'})."""
    return metric[0] + (f" {metric[1]}" if metric[1] else "")


def _score_nested(decisions: Decisions, fitted: NestedFit, rows: Any, kind: str, metric: Tuple[str, Dict, float],
                  apply: Any, task: Task) -> None:
    """The metric of the nested decisions per fold and pooled, and of the default thresholds per fold (their mean)."""
    score = _objective(metric[0], kind, metric[1], 1.0)
    default = _default_params(kind, task, rows.pred)
    decisions.scores, defaults = {}, []
    for k in sorted(fitted.fold_params):
        held = rows.fold == k
        decisions.scores[k] = score(rows.target[held], fitted.labels[held])
        defaults.append(score(rows.target[held], apply(rows.pred[held], default)))
    decisions.pooled = score(rows.target, fitted.labels)
    finite = [v for v in defaults if v == v]
    decisions.default_mean = float(np.mean(finite)) if finite else None


def _default_params(kind: str, task: Task, pred: np.ndarray) -> Any:
    from ..thresholds import DEFAULT_THRESHOLD, default_cuts

    if kind == "ordinal":
        return default_cuts(task.num_classes)
    return np.full(pred.shape[1], DEFAULT_THRESHOLD) if pred.ndim == 2 else DEFAULT_THRESHOLD


def _null(value: Optional[float]) -> Optional[float]:
    return None if value is None or value != value else float(value)


def write_decisions(run: RunDir, decisions: Optional[Decisions]) -> None:
    """thresholds.json of `decisions` (atomically), or no such file when nothing was fitted (a stale one removed)."""
    if decisions is None:
        run.thresholds.unlink(missing_ok=True)
        return
    atomic_write_text(run.thresholds, json.dumps(decisions.record, indent=2) + "\n")


def thresholds_for_test(task: Task, run: RunDir, sample: Optional[Sample]) -> Any:
    """The thresholds the test predictions are decided with: thresholds.json's (fitted on all OOF) when the run's
    decisions need them (fitted now from oof.csv, and written, when the run has none yet); None otherwise."""
    if decision_metric(task) is None and not is_tags(sample, task):
        return None
    if run.thresholds.is_file():
        try:
            return np.asarray(json.loads(run.thresholds.read_text())["params"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as err:
            raise KitError(f"{run.thresholds}: not a thresholds record ({err}); delete it and re-run `kitpkg predict` "
                           f"(it is fitted again from oof.csv)") from None
    if not run.oof.is_file():
        raise KitError(f"{run.root}: no oof.csv to fit the decision thresholds on; finish the CV (`kitpkg cv`) first")
    from ..tables import read_csv

    decisions = fit_decisions(task, read_csv(run.oof), sample)
    write_decisions(run, decisions)
    return None if decisions is None else decisions.params


def sample_of(config: Config) -> Optional[Sample]:
    """The competition's sample submission (output.sample_submission), or None."""
    return read_sample(config.output.sample_submission) if config.output.sample_submission else None


def kind_and_names(task: Task) -> Tuple[str, Optional[list]]:
    """(kind, names) kitpkg/submission.py takes for this task: train.score_class is binary (its class's probability);
    names are the class names (text classes; None: integer labels, written as indices), or the label or target
    columns (multilabel, soft, regression)."""
    kind = "binary" if task.scored_binary else task.kind
    if kind in ("multilabel", "soft", "regression"):
        return kind, list(task.labels)
    return kind, None if task.score_class is not None or task.classes is None else list(task.classes)


def submission_of(task: Task, test: pd.DataFrame, config: Config, thresholds: Any = None) -> pd.DataFrame:
    """The submission of fold-averaged test predictions (kitpkg/submission.py): the sample's layout
    (output.sample_submission) or the kit's id_col,pred_col; one function for `kitpkg cv` and `kitpkg predict`."""
    kind, names = kind_and_names(task)
    rows = read_predictions(test, task)
    return submission_frame(kind, list(rows.ids), rows.pred, names, thresholds, sample_of(config),
                            config.output.id_col, config.output.pred_col)


def check_sample(config: Config, task: Task, test_ids: Sequence[str]) -> None:
    """Refuse a sample submission that cannot hold this task's predictions of `test_ids` (ids, columns) in one line,
    before anything is trained or written (placeholder predictions stand in for the real ones)."""
    sample = sample_of(config)
    if sample is None or not test_ids:
        return
    kind, names = kind_and_names(task)
    pred = np.zeros(len(test_ids)) if one_dimensional(task) else np.zeros((len(test_ids), task.outputs))
    submission_frame(kind, test_ids, pred, names, None, sample, config.output.id_col, config.output.pred_col)
