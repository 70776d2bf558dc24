"""A user's own metric: a Python file of Kaggle's metric code, named `train.metric: my_metric.py:score` (the path
relative to the config's folder; `my_metric.py` alone means its `score`). The file holds
`score(solution, submission, row_id_column_name, **params) -> float` and a module-level `higher_is_better`; a mapping
`{name: my_metric.py:score, min_tpr: 0.8}` passes its other keys to the function as keyword arguments.

Loading the file runs the user's code (what they asked for); its folder is on sys.path while it is imported, so the
helpers it imports beside it are found. Here live as well the conversions between Kaggle frames (id column + value
columns, rows in the same order) and the canonical arrays: a user's metric scores arrays as generated frames, a
built-in one scores frames as arrays.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import KitError
from .metrics import Metric, check_arrays


@dataclass(frozen=True)
class FrameColumns:
    """The column names of the frames a user's metric is given: None -> `target` (one column) or `target_0`...;
    `prediction` None -> the target's names when the widths match (Kaggle's submissions repeat them)."""

    id: str = "id"
    target: Optional[Tuple[str, ...]] = None
    prediction: Optional[Tuple[str, ...]] = None


class UserMetric(Metric):
    """The function of a user's metric file, scoring Kaggle frames (canonical arrays become generated frames)."""

    def __init__(self, path: Path, function: str, kind: str, params: Mapping[str, Any],
                 columns: Optional[FrameColumns] = None):
        self.path, self.function, self.kind = Path(path), function, kind
        self.params, self.columns = dict(params), columns or FrameColumns()
        self.name, self.needs = f"{self.path.name}:{function}", "scores"
        self._score, self.higher_is_better = _load(self.path, function, self.params)

    def __reduce__(self):
        # the function of a file imported by path does not pickle (DDP spawn): a copy loads the file again
        return UserMetric, (self.path, self.function, self.kind, self.params, self.columns)

    def compute(self, target: np.ndarray, pred: np.ndarray) -> float:
        """The function's score of frames made from canonical arrays (ids 0..N-1); NaN when it fails, warned."""
        target, pred = check_arrays(self.name, self.kind, target, pred)
        if not len(target):
            return float("nan")
        return self._call(*arrays_to_frames(target, pred, self.columns), self.columns.id)

    def score_frames(self, solution: Any, submission: Any, id_col: str) -> float:
        """The function's score of Kaggle frames (copies: Kaggle's code deletes the id column); NaN when it fails."""
        return self._call(solution.copy(), submission.copy(), id_col)

    def _call(self, solution, submission, id_col: str) -> float:
        # a fold the user's code cannot score (e.g. scikit-learn's "Only one class present") must not end the run
        try:
            return float(self._score(solution, submission, id_col, **self.params))
        except Exception as e:  # noqa: BLE001 -- the user's code may raise anything
            first = (str(e).splitlines() or [""])[0]
            warnings.warn(f"train.metric: {self.name} failed, scored NaN: {type(e).__name__}: {first}", stacklevel=2)
            return float("nan")


def load_user_metric(spec: str, base_dir: Union[str, Path], kind: str, params: Mapping[str, Any],
                     columns: Optional[FrameColumns] = None) -> UserMetric:
    """The `UserMetric` of `file.py[:function]` (path relative to `base_dir`); KitError if it cannot be used."""
    file, _, function = spec.partition(":")
    path = Path(base_dir) / file
    if not path.is_file():
        raise KitError(f"train.metric: metric file {file} not found (looked for {path}; a path relative to the "
                       f"config's folder)")
    return UserMetric(path, function.strip() or "score", kind, params, columns)


def _load(path: Path, function: str, params: Mapping[str, Any]) -> Tuple[Callable[..., Any], bool]:
    """(the function, higher_is_better) of the metric file `path`, its parameters checked against `params`."""
    module = _import(path)
    score = getattr(module, function, None)
    if not callable(score):
        defined = [n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__]
        raise KitError(f"train.metric: {path.name} has no function {function!r} (it defines: "
                       f"{', '.join(defined) or 'none'})")
    higher = getattr(module, "higher_is_better", None)
    if not isinstance(higher, bool):
        raise KitError(f"train.metric: {path.name} needs a module-level `higher_is_better = True` (or False) "
                       f"saying which way its score improves")
    try:
        inspect.signature(score).bind(None, None, "id", **params)
    except TypeError as e:
        raise KitError(f"train.metric: {path.name}:{function} cannot take {', '.join(params) or 'its 3 arguments'} "
                       f"({e}); it takes {inspect.signature(score)}") from None
    return score, higher


def _import(path: Path):
    """The metric file imported as a module of its own (registered: dataclasses and pickling look modules up)."""
    folder = str(path.parent.resolve())
    name = f"kitpkg_user_metric_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 -- the user's code may raise anything while importing
        del sys.modules[name]
        first = (str(e).splitlines() or [""])[0]
        raise KitError(f"train.metric: importing {path.name} failed: {type(e).__name__}: {first}") from None
    finally:
        sys.path.remove(folder)
    return module


def arrays_to_frames(target: np.ndarray, pred: np.ndarray, columns: FrameColumns = FrameColumns()):
    """(solution, submission) Kaggle frames of canonical arrays: ids 0..N-1, then one column per array column."""
    target_names = _names(columns.target, target, "target")
    same_width = target.shape[1:] == pred.shape[1:]
    pred_names = _names(columns.prediction or (target_names if same_width else None), pred, "target")
    ids = np.arange(len(target))
    return _frame(columns.id, ids, target, target_names), _frame(columns.id, ids, pred, pred_names)


def _names(given: Optional[Sequence[str]], values: np.ndarray, stem: str) -> Tuple[str, ...]:
    width = 1 if values.ndim == 1 else values.shape[1]
    if given is None:
        return (stem,) if values.ndim == 1 else tuple(f"{stem}_{i}" for i in range(width))
    if len(given) != width:
        raise KitError(f"train.metric: {len(given)} column names ({', '.join(given)}) for {width} columns of values")
    return tuple(given)


def _frame(id_col: str, ids: np.ndarray, values: np.ndarray, names: Sequence[str]):
    import pandas as pd

    table: Dict[str, Any] = {id_col: ids}
    table.update(zip(names, values.reshape(len(values), -1).T))
    return pd.DataFrame(table)


def frames_to_arrays(solution: Any, submission: Any, id_col: str, kind: str) -> Tuple[np.ndarray, np.ndarray]:
    """(target, prediction) canonical arrays of Kaggle frames: submission rows matched to the solution's ids, its
    columns to the solution's names when both hold the same; a multiclass solution may be one-hot columns."""
    for frame, what in ((solution, "solution"), (submission, "submission")):
        if id_col not in frame.columns:
            raise KitError(f"train.metric: the {what} frame has no id column {id_col!r} (columns: "
                           f"{', '.join(map(str, frame.columns))})")
    if not solution[id_col].reset_index(drop=True).equals(submission[id_col].reset_index(drop=True)):
        indexed = submission.set_index(id_col)
        missing = solution[id_col][~solution[id_col].isin(indexed.index)]
        if len(missing):
            raise KitError(f"train.metric: the submission frame lacks {len(missing)} ids of the solution "
                           f"(first: {missing.iloc[0]!r})")
        submission = indexed.loc[solution[id_col]].reset_index()
    target_cols = [c for c in solution.columns if c != id_col]
    pred_cols = [c for c in submission.columns if c != id_col]
    if set(pred_cols) == set(target_cols):
        pred_cols = target_cols
    target, pred = _values(solution[target_cols]), _values(submission[pred_cols])
    if kind == "multiclass" and target.ndim == 2:  # one-hot solution columns (Plant Pathology's) -> class index
        target = target.argmax(axis=1)
    return target, pred


def _values(frame) -> np.ndarray:
    values = frame.to_numpy()
    return values[:, 0] if values.shape[1] == 1 else values
