"""The submission file: with the competition's sample_submission.csv, exactly its columns, its ids and its row order.

The sample's first column is the id column; its other columns say where each task kind's prediction goes
(predictions are each kind's canonical arrays: binary and ordinal (N,), multiclass and soft (N, C) probabilities,
multilabel (N, L) probabilities, regression (N,) or (N, K) values):

| kind | sample columns after the id | written |
|---|---|---|
| binary | one column (any name, e.g. ISIC's `target`) | P(positive); with a threshold, the decided class |
| binary, multiclass, soft | one column per class, named as the classes | each class's probability |
| multiclass, soft | one column not named as a class (Cassava's `label`) | the argmax class |
| multilabel | one column per label, named as the labels | each label's probability; with thresholds, 0/1 |
| multilabel | one column not named as a label (Planet's `tags`) | the labels >= their threshold, space-separated |
| regression | one column, or one per target column named as those | the values |
| ordinal | one column | the class cut from the prediction by the cuts |

A class is written as its name when the training CSV's labels were text (`names` given), else as its index.
A sample that does not fit (ids other than the test predictions', columns that are no class or label) is refused in
one line naming the file and what differs. Without a sample the file keeps the kit's own layout `id_col,pred_col`
(binary: P(positive); multiclass, ordinal: the class index), one column per label (multilabel), per class (soft: its
probability, as the soft task always wrote) or per target column (regression with several). Non-finite predictions
are refused; the file appears only when complete.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd

from .errors import KitError
from .predictions import non_finite_ids
from .tables import write_csv
from .thresholds import DEFAULT_THRESHOLD, apply_cuts, apply_thresholds, default_cuts

KINDS = ("binary", "multiclass", "multilabel", "regression", "ordinal", "soft")
CLASS_KINDS = ("binary", "multiclass", "soft")  # a probability per class, or one decided class


class Sample(NamedTuple):
    """A competition's sample submission: its file, id column, prediction columns and ids in row order."""

    path: Path
    id_col: str
    columns: List[str]
    ids: List[str]


def read_sample(path: Any) -> Sample:
    """The sample submission's id column (its first), prediction columns and ids (kept as text, in row order)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such file; set output.sample_submission to the competition's "
                       f"sample_submission.csv (or leave it empty for the kit's id,prediction file)")
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise KitError(f"{path}: not a readable CSV ({str(err).splitlines()[0]}); give the competition's "
                       f"sample_submission.csv") from None
    if len(header) < 2:
        raise KitError(f"{path}: has columns {header}; a sample submission needs an id column and at least one "
                       f"prediction column")
    ids = pd.read_csv(path, usecols=[0], dtype=str, keep_default_na=False, encoding="utf-8-sig").iloc[:, 0].tolist()
    dupes = sorted(set(pd.Series(ids)[pd.Series(ids).duplicated()]))
    if dupes:
        raise KitError(f"{path}: ids occur more than once in {header[0]} ({dupes[:3]}); give the competition's "
                       f"sample_submission.csv")
    return Sample(path, header[0], header[1:], ids)


def submission_frame(kind: str, ids: Sequence[Any], pred: np.ndarray, names: Optional[Sequence[str]] = None,
                     thresholds: Any = None, sample: Optional[Sample] = None, id_col: str = "id",
                     pred_col: str = "prediction") -> pd.DataFrame:
    """The submission as a frame: the sample's columns, ids and row order, or without a sample the kit's layout.

    `names`: class names in index order (None when the labels were integers), label names (multilabel) or target
    columns (regression). `thresholds`: fitted on all OOF: one (binary) or one per label (multilabel), None = no
    decisions (multilabel tags: 0.5); ordinal: the cuts (None = thresholds.default_cuts(len(names))).
    """
    return _build(kind, ids, pred, names, thresholds, sample, id_col, pred_col, "the submission")


def write_submission(path: Any, kind: str, ids: Sequence[Any], pred: np.ndarray,
                     names: Optional[Sequence[str]] = None, thresholds: Any = None, sample: Any = None,
                     id_col: str = "id", pred_col: str = "prediction") -> Path:
    """Write the submission CSV atomically (see submission_frame; `sample` is a path or None) and return its path."""
    frame = _build(kind, ids, pred, names, thresholds, read_sample(sample) if sample else None, id_col, pred_col,
                   path)
    write_csv(frame, Path(path))
    return Path(path)


def _build(kind: str, ids: Sequence[Any], pred: np.ndarray, names: Optional[Sequence[str]], thresholds: Any,
           sample: Optional[Sample], id_col: str, pred_col: str, where: Any) -> pd.DataFrame:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    ids = [str(i) for i in ids]
    pred = _checked_pred(kind, ids, pred, names, where)
    if sample is None:  # the kit's own layout writes class indices, as it always has
        columns = _default_columns(kind, pred, names, pred_col)
        return _frame(id_col, ids, _values(kind, columns, pred, names, thresholds, class_names=False))
    order = _sample_order(sample, ids)
    values = _fitting_values(sample, kind, pred, names, thresholds)
    return _frame(sample.id_col, sample.ids, {c: v[order] for c, v in values.items()})


def _checked_pred(kind: str, ids: List[str], pred: np.ndarray, names: Optional[Sequence[str]], where: Any
                  ) -> np.ndarray:
    """The prediction array as float64, its shape checked against the kind and `names`; non-finite rows refused."""
    pred = np.asarray(pred, dtype=np.float64)
    two_d = kind in ("multiclass", "soft", "multilabel") or (kind == "regression" and pred.ndim == 2)
    if len(pred) != len(ids) or pred.ndim != (2 if two_d else 1):
        raise ValueError(f"{kind} predictions of shape {pred.shape} do not fit {len(ids)} ids (see the task-kind "
                         f"table: (N,) or (N, C))")
    if two_d and names is not None and pred.shape[1] != len(names):
        raise ValueError(f"{kind} predictions have {pred.shape[1]} columns but {len(names)} names {list(names)[:5]}")
    if kind == "multilabel" and names is None:
        raise ValueError("multilabel submissions need the label names")
    if len(set(ids)) < len(ids):
        raise KitError(f"{where}: the test predictions hold an id more than once; re-run `kitpkg predict`")
    bad = non_finite_ids(ids, pred)
    if bad:
        raise KitError(f"{where}: {len(bad)} of {len(pred)} test predictions are not finite (ids {bad[:3]}); a fold "
                       f"diverged or an input is non-finite: retrain it; nothing was written")
    return pred


def _sample_order(sample: Sample, ids: List[str]) -> np.ndarray:
    """Row of the predictions for each sample row; refused when the two id sets differ."""
    position = {i: n for n, i in enumerate(ids)}
    missing = [i for i in sample.ids if i not in position]
    wanted = set(sample.ids)
    extra = [i for i in ids if i not in wanted]
    if missing or extra:
        raise KitError(f"{sample.path}: its {sample.id_col} values are not the test predictions' ids ({len(missing)} "
                       f"of its ids have no prediction, e.g. {missing[:3]}; {len(extra)} predicted ids are not in it, "
                       f"e.g. {extra[:3]}); predict the competition's test images, or give its own sample")
    return np.array([position[i] for i in sample.ids], dtype=np.int64)


def _fitting_values(sample: Sample, kind: str, pred: np.ndarray, names: Optional[Sequence[str]], thresholds: Any
                    ) -> Dict[str, np.ndarray]:
    """The sample's columns filled from the predictions; KitError naming the file when they do not fit the task."""
    problem = _column_problem(kind, sample.columns, pred, names)
    if problem:
        raise KitError(f"{sample.path}: {problem}; give the competition's sample_submission.csv, or check the task "
                       f"(train.task) and the label columns")
    return _values(kind, sample.columns, pred, names, thresholds)


def _column_problem(kind: str, columns: List[str], pred: np.ndarray, names: Optional[Sequence[str]]) -> str:
    """Why `columns` cannot hold this task's predictions ('' when they can)."""
    single = len(columns) == 1
    if kind in ("binary", "ordinal") and single:
        return ""
    if kind in ("multiclass", "soft") and single and columns[0] not in _class_names(pred, names):
        return ""
    if kind == "multilabel" and single and columns[0] not in names:
        return ""
    if kind == "regression" and single and pred.ndim == 1:
        return ""
    if kind == "ordinal":
        return f"has {len(columns)} prediction columns {columns[:5]}; an ordinal task writes one (the class)"
    expected = _class_names(pred, names) if kind in CLASS_KINDS else list(names or [])
    what = {"multilabel": "label", "regression": "target column"}.get(kind, "class")
    unknown = [c for c in columns if c not in expected]
    missing = [c for c in expected if c not in columns]
    if unknown or missing:
        return (f"columns {unknown[:5]} are no {what} of the {kind} task and {what}s {missing[:5]} have no column "
                f"({what}s: {expected[:8]})")
    return ""


def _class_names(pred: np.ndarray, names: Optional[Sequence[str]]) -> List[str]:
    """Class names in index order: the given names, else the indices as text (integer labels)."""
    count = 2 if pred.ndim == 1 else pred.shape[1]
    return [str(n) for n in names] if names is not None else [str(c) for c in range(count)]


def _default_columns(kind: str, pred: np.ndarray, names: Optional[Sequence[str]], pred_col: str) -> List[str]:
    """The kit's own layout: one prediction column, or one per label (multilabel), class column (soft: each its
    probability) or target column (regression)."""
    if kind in ("multilabel", "soft") or (kind == "regression" and pred.ndim == 2):
        if names is None:
            raise ValueError(f"{kind} submissions with several columns need their names")
        return [str(n) for n in names]
    return [pred_col]


def _values(kind: str, columns: List[str], pred: np.ndarray, names: Optional[Sequence[str]], thresholds: Any,
            class_names: bool = True) -> Dict[str, np.ndarray]:
    """Column -> values (rows in prediction order) of a layout that fits the task (see _column_problem); a decided
    class is written by name when `class_names` and names are given, else as its index."""
    written = names if class_names else None
    if kind == "regression":
        return {columns[0]: pred} if pred.ndim == 1 else {c: pred[:, [str(n) for n in names].index(c)]
                                                         for c in columns}
    if kind == "multilabel":
        return _multilabel_values(columns, pred, [str(n) for n in names], thresholds)
    if kind == "ordinal":
        cuts = thresholds if thresholds is not None else default_cuts(_require_names(names, "cuts"))
        return {columns[0]: _as_labels(apply_cuts(pred, cuts), written)}
    probs = np.stack([1 - pred, pred], axis=1) if kind == "binary" else pred
    classes = _class_names(pred, names)
    if len(columns) > 1 or (kind != "binary" and columns[0] in classes):
        return {c: probs[:, classes.index(c)] for c in columns}
    if kind == "binary":
        return {columns[0]: pred if thresholds is None else _as_labels(apply_thresholds(pred, thresholds), written)}
    return {columns[0]: _as_labels(probs.argmax(axis=1), written)}


def _multilabel_values(columns: List[str], pred: np.ndarray, labels: List[str], thresholds: Any
                       ) -> Dict[str, np.ndarray]:
    """One column per label (probabilities, or 0/1 with thresholds), or one column of space-separated labels."""
    if len(columns) == 1 and columns[0] not in labels:
        decided = apply_thresholds(pred, DEFAULT_THRESHOLD if thresholds is None else thresholds)
        tags = [" ".join(label for label, on in zip(labels, row) if on) for row in decided]
        return {columns[0]: np.array(tags, dtype=object)}
    values = pred if thresholds is None else apply_thresholds(pred, thresholds)
    return {c: values[:, labels.index(c)] for c in columns}


def _as_labels(indices: np.ndarray, names: Optional[Sequence[str]]) -> np.ndarray:
    """Class indices as the training CSV wrote its labels: names (text labels) or the indices themselves."""
    if names is None:
        return indices.astype(np.int64)
    return np.array([str(n) for n in names], dtype=object)[indices]


def _require_names(names: Optional[Sequence[str]], what: str) -> int:
    if names is None:
        raise ValueError(f"ordinal submissions need the {what} (or the class names to count the classes)")
    return len(names)


def _frame(id_col: str, ids: List[str], values: Dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame({c: v for c, v in values.items()})
    frame.insert(0, id_col, ids)
    return frame
