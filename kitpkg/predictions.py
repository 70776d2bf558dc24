"""The columns of a run's OOF and test prediction files, per task, written and read here only.

The files (oof.csv, fold{k}/oof.csv, test_predictions.csv; a blend's too):
  OOF:  id, fold, target column(s), prediction column(s)
  test: id, prediction column(s)
with, per task (kitpkg/task.py), the canonical arrays `read_predictions` gives:
  binary      target (0/1); prediction = P(positive)                                  pred (N,)
  multiclass  target (class index); prediction = argmax class, prob_0..prob_{C-1}     pred (N, C) = the prob_c
  score_class target (1 for the scored class, else 0); prediction = its probability, prob_0..prob_{C-1} beside it:
              scored as binary, pred (N,) = prediction
  ordinal     target (class index); prediction = the value on the class-index scale, prediction_class = the class
              it rounds to                                                             pred (N,) = prediction
  soft        target_<label>... (the distribution), pred_<label>... (softmax probabilities) pred (N, C)
  multilabel  target_<label>... (0/1), pred_<label>... (each label's probability)     pred (N, L)
  regression  one label column: target, prediction (N,); K columns: target_<label>..., pred_<label>... (N, K),
              values in the CSV's units
The writer (`prediction_frame`) takes probabilities (the activation is the model's, kitpkg/train/outputs.py); the
reader (`read_predictions`) gives the canonical arrays that scores, blends, pseudo-labels and reports use.
`blend`, `runs`, `pseudo`, `merge` and the report read prediction files through `read_predictions` / `read_truth` /
the column functions below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd

from .errors import KitError
from .task import Task

ID, FOLD, TARGET, PREDICTION, PROB = "id", "fold", "target", "prediction", "prob_"
PREDICTED_CLASS = "prediction_class"  # ordinal: the class the value rounds to (submitted)


def class_prob_columns(count: int) -> List[str]:
    """prob_0..prob_{count-1}: every class's probability beside the prediction (multi-class outputs)."""
    return [f"{PROB}{c}" for c in range(count)]




def target_columns(task: Task) -> List[str]:
    """The target column(s) of an OOF file: target, or target_<label> for each of several label columns."""
    if task.per_label and (len(task.labels) > 1 or task.kind == "multilabel"):
        return [f"{TARGET}_{label}" for label in task.labels]
    return [TARGET]


def prediction_columns(task: Task) -> List[str]:
    """The columns holding the scored predictions: prediction (scored as binary, or one value: regression, ordinal),
    pred_<label> (one per label column) or prob_0..prob_{C-1}."""
    if task.per_label:
        return [f"pred_{label}" for label in task.labels] if len(target_columns(task)) > 1 else [PREDICTION]
    return [PREDICTION] if task.scored_binary or task.kind == "ordinal" else class_prob_columns(task.outputs)


def probability_columns(task: Task) -> List[str]:
    """The columns holding the prediction of every network output: prediction (one logit) or prob_0..prob_{C-1}
    (train.score_class too: its prediction column repeats one of them); a regression's values."""
    if task.per_label or task.kind == "ordinal":
        return prediction_columns(task)
    return [PREDICTION] if task.one_logit else class_prob_columns(task.outputs)


def one_dimensional(task: Task) -> bool:
    """Whether the task's canonical arrays are (N,): scored as binary, or one value per row."""
    return task.scored_binary or task.kind == "ordinal" or (task.per_label and len(target_columns(task)) == 1)


def ordinal_classes(task: Task, values: np.ndarray) -> np.ndarray:
    """The classes ordinal values round to: cuts at k - 0.5 (round half up), clipped to 0..C-1."""
    return np.clip(np.floor(np.asarray(values, dtype=np.float64) + 0.5), 0, task.num_classes - 1).astype(np.int64)


def canonical(task: Task, values: np.ndarray) -> np.ndarray:
    """N × columns of a prediction (or target) as the task's canonical array: (N,) where it is one-dimensional."""
    values = np.asarray(values)
    return values.reshape(len(values), -1)[:, 0] if one_dimensional(task) else values


def task_of_columns(frame: pd.DataFrame) -> Task:
    """The task a prediction file read without its run implies: prob_c columns -> multiclass, else binary."""
    from .task import task_of_outputs

    return task_of_outputs(max(1, sum(c.startswith(PROB) for c in frame.columns)))


def non_finite_ids(ids: Sequence[Any], values: np.ndarray) -> List[str]:
    """The ids (as text) of the rows of `values` (N, or N×C) holding NaN or inf: what every writer of OOF, test
    predictions and submissions refuses (a diverged fold, a non-finite input)."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    return [str(i) for i, fine in zip(ids, ok) if not fine]


def prediction_frame(task: Task, ids: Sequence[Any], probs: np.ndarray, fold: Optional[int] = None,
                     target: Any = None) -> pd.DataFrame:
    """Rows of a prediction file from probabilities (N × outputs): id[, fold, target], then the task's prediction
    columns (module docstring); `target` already as scored (0/1 for train.score_class) and written as given."""
    out = pd.DataFrame({ID: ids})
    if fold is not None:
        out[FOLD] = fold
    if task.per_label:
        if target is not None:
            target = np.asarray(target, dtype=np.float64).reshape(len(out), -1)
            for j, column in enumerate(target_columns(task)):
                out[column] = target[:, j]
        for j, column in enumerate(prediction_columns(task)):
            out[column] = probs[:, j]
        return out
    if target is not None:
        out[TARGET] = target
    if task.kind == "ordinal":
        out[PREDICTION] = probs[:, 0]
        out[PREDICTED_CLASS] = ordinal_classes(task, probs[:, 0])
        return out
    if task.one_logit:
        out[PREDICTION] = probs[:, 0]
        return out
    out[PREDICTION] = probs.argmax(1) if task.score_index is None else probs[:, task.score_index]
    for c, column in enumerate(class_prob_columns(probs.shape[1])):
        out[column] = probs[:, c]
    return out


@dataclass
class Predictions:
    """A prediction file read back: ids, folds and targets (None in a test file) and the scored predictions as the
    task's canonical arrays; `labels` the class each row was given (multiclass: the prediction column, else None);
    `class_probs` the prob_c columns when the file has them (else None)."""

    ids: np.ndarray
    fold: Optional[np.ndarray]
    target: Optional[np.ndarray]
    pred: np.ndarray
    labels: Optional[np.ndarray] = None
    class_probs: Optional[np.ndarray] = None

    def score(self, task: Task) -> float:
        """The task's metric of these rows (the class given in the file decides accuracy, as written; every other
        metric scores the canonical predictions)."""
        as_written = self.labels is not None and task.scorer().name == "accuracy"
        return score(task, self.target, self.labels if as_written else self.pred)


def _target(frame: pd.DataFrame, task: Task) -> np.ndarray:
    if task.per_label:
        return canonical(task, frame[target_columns(task)].to_numpy(np.float64))
    return frame[TARGET].to_numpy(np.float64 if task.scored_binary else np.int64)


def read_truth(frame: pd.DataFrame, task: Task) -> Predictions:
    """The ids, folds and targets of an OOF frame (kitpkg.tables.read_csv of the file; KeyError naming a missing
    column), its predictions left unread (`pred` empty): what comparing two runs' splits and labels needs."""
    return Predictions(ids=frame[ID].astype(str).to_numpy(), fold=frame[FOLD].to_numpy(int),
                       target=_target(frame, task), pred=np.zeros((len(frame), 0)))


def read_predictions(frame: pd.DataFrame, task: Task) -> Predictions:
    """The canonical arrays of an OOF or test frame (kitpkg.tables.read_csv of the file) of a run of `task`."""
    pred = frame[prediction_columns(task)].to_numpy(np.float64)
    probs = [c for c in frame.columns if c.startswith(PROB)]
    labels = None
    if task.probabilities and not task.scored_binary and PREDICTION in frame:
        labels = frame[PREDICTION].to_numpy(np.int64)
    return Predictions(ids=frame[ID].astype(str).to_numpy(), fold=frame[FOLD].to_numpy(int) if FOLD in frame else None,
                       target=_target(frame, task) if target_columns(task)[0] in frame else None,
                       pred=canonical(task, pred), labels=labels,
                       class_probs=frame[probs].to_numpy(np.float64) if probs else None)


def score(task: Task, target: np.ndarray, pred: np.ndarray) -> float:
    """The task's metric (the registry's, task.scorer()) of canonical arrays; NaN when they cannot be scored (an AUC
    of one class). A multiclass `pred` of N class indices (not N × C probabilities) is scored by accuracy only."""
    pred = np.asarray(pred)
    if task.kind == "multiclass" and task.score_class is None and pred.ndim == 1:
        if task.scorer().name != "accuracy":
            raise KitError(f"{task.scoring.label} scores class probabilities, not class indices")
        return float((pred == np.asarray(target)).mean())
    return task.scorer().compute(np.asarray(target), pred)
