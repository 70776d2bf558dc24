"""What a finished fold must hold to be used: weights it may predict with, and complete, finite predictions.

The weights rule (one home, used by `kitpkg cv`, `predict`, `merge` and `runs`): a fold predicts with its best.ckpt,
the epoch the monitored metric scored best. Its last checkpoint stands in for a missing best.ckpt only when no
validation metric was ever finite, which the checkpoints themselves record (RunCheckpoints' `best` is None): such a
fold's best.ckpt, when written, holds its newest weights, the last checkpoint's (earlier versions wrote none); a
warning says so. A best.ckpt that should exist but is missing, damaged or refused by the safe loader is never
replaced by other weights: the fold has no usable weights. `kitpkg cv` then trains it again (reopen_lost_folds, one
printed line), so the advice of the error (`re-run kitpkg cv`) works as written.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import numpy as np

from ..errors import KitError
from ..rundir import FoldRecord, RunDir
from .checkpoint import BEST, RunCheckpoints, is_intact, latest_intact, load_checkpoint

if TYPE_CHECKING:
    import pandas as pd

    from .runstate import RunState

LOST = "lost"  # status of a fold recorded done whose best weights are gone: `kitpkg cv` trains it again


def _recorded_best(path: Path) -> Optional[int]:
    """The epoch that scored best according to the RunCheckpoints state inside checkpoint `path` (None: no
    validation metric was finite up to it, so no best.ckpt was written)."""
    state = load_checkpoint(path).get("callbacks", {}).get(RunCheckpoints.__qualname__, {})
    if state.get("best") is None:
        return None
    epoch = state.get("best_epoch")
    return -1 if epoch is None else int(epoch)


def _opens(path: Path) -> bool:
    """Cheap check that a checkpoint is whole: its zip directory (at the end of the file: gone when cut short) reads."""
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def weights_problem(folder: Path, thorough: bool = True) -> Optional[str]:
    """Why a finished fold's checkpoint folder holds no weights it may predict with (None: it does).

    thorough: best.ckpt must pass every CRC and load with weights_only=True (what predict loads); else only its zip
    directory must read (`kitpkg cv` and `runs` look at every finished fold: a cut or missing file is what happens)."""
    best = folder / BEST
    if best.exists():
        if is_intact(best) if thorough else _opens(best):
            return None
        return f"{best} is damaged or refused by the safe loader"
    last = latest_intact(folder)
    if last is None:
        return f"{best} is missing and {folder} holds no intact checkpoint"
    epoch = _recorded_best(last)
    if epoch is None:
        return None  # no finite metric: the last checkpoint is the fold's weights (fold_weights warns)
    return f"{best} is missing; epoch {epoch} scored best" if epoch >= 0 else f"{best} is missing"


def fold_weights(run_dir: Path, k: int) -> Path:
    """The checkpoint fold k predicts with (see the module doc); KitError naming the fold and the fix when none."""
    folder = RunDir(run_dir).ckpt_dir(k)
    problem = weights_problem(folder)
    if problem is not None:
        raise KitError(lost_weights_message(run_dir, k, problem))
    if (folder / BEST).exists():
        return folder / BEST
    last = latest_intact(folder)
    warnings.warn(f"kitpkg: fold {k}: no validation metric was ever finite and there is no best.ckpt; predicting "
                  f"with its last checkpoint {last} (the newest weights, as such a best.ckpt would hold)",
                  RuntimeWarning, stacklevel=2)
    return last


def lost_weights_message(run_dir: Path, k: int, problem: str) -> str:
    """One line: fold k has no usable weights (`problem`), and what to do (which works as written)."""
    cv = retrain_advice(run_dir, k)
    best = RunDir(run_dir).ckpt_dir(k) / BEST
    if best.exists():  # a damaged file looks whole to cv's cheap check: without it, cv sees the fold's loss
        return f"fold {k}: its best weights are unusable ({problem}); delete {best} and {cv}"
    return f"fold {k}: its best weights are gone ({problem}); {cv}"


def done_fold_problem(run_dir: Path, k: int) -> Optional[str]:
    """Why a fold recorded done cannot be used as it is (cheap checks: every finished fold is looked at): its best
    weights are gone, or its OOF predictions (a merge of an earlier version recorded folds without them)."""
    problem = weights_problem(RunDir(run_dir).ckpt_dir(k), thorough=False)
    if problem is not None:
        return f"its best weights are gone ({problem})"
    oof = RunDir(run_dir).fold_oof(k)
    if not oof.is_file() or oof.stat().st_size == 0:
        return f"its OOF predictions are gone ({oof} is {'empty' if oof.is_file() else 'missing'})"
    return None


def retrain_advice(run_dir: Path, k: int) -> str:
    """What trains fold k again: `kitpkg cv` reopens a done fold that cannot be used (reopen_lost_folds)."""
    return f"re-run `kitpkg cv` with this run's config and run directory ({run_dir}): it trains fold {k} again"


def reopen_lost_folds(state: "RunState") -> List[int]:
    """Folds recorded done that cannot be used (done_fold_problem): each reset to LOST with one printed line, so
    `kitpkg cv` trains it again (rank 0 writes; every rank gets the list)."""
    from .runstate import is_rank_zero

    lost = []
    for k in state.done_folds():
        problem = done_fold_problem(state.run_dir, k)
        if problem is None:
            continue
        lost.append(k)
        if is_rank_zero():
            print(f"kitpkg: fold {k} is recorded done but {problem}; training it again", flush=True)
            state.replace_fold(k, FoldRecord(status=LOST, reason=problem))
    return lost


def values_problem(frame: "pd.DataFrame", columns: Sequence[str], probabilities: bool = True) -> Optional[str]:
    """Why the `columns` of a predictions frame cannot be used: not numbers, NaN/inf, or (probabilities) outside
    [0, 1] -- counted, with the first offending column (None when every value is usable)."""
    import pandas as pd

    missing = [c for c in columns if c not in frame.columns]
    if missing or not columns:
        return f"no column {missing[0] if missing else 'of predictions'}"
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    text = frame[list(columns)].notna().to_numpy() & np.isnan(values)
    if text.any():
        return f"{_count(text.sum())} not numbers (column {columns[int(np.flatnonzero(text.any(0))[0])]})"
    bad = ~np.isfinite(values)
    if bad.any():
        return f"{_count(bad.sum())} NaN or infinite (column {columns[int(np.flatnonzero(bad.any(0))[0])]})"
    outside = (values < 0) | (values > 1) if probabilities else np.zeros_like(bad)
    if outside.any():
        return (f"{_count(outside.sum())} outside [0, 1] (column {columns[int(np.flatnonzero(outside.any(0))[0])]}: "
                f"logits, not probabilities?)")
    return None


def _count(n: int) -> str:
    return f"{n} prediction is" if n == 1 else f"{n} predictions are"


def predictions_problem(path: Path, expected_ids: Sequence[str], columns: Sequence[str], probabilities: bool
                        ) -> Optional[str]:
    """Why a fold's predictions file (its OOF or test predictions) is not complete: missing, empty, cut short,
    other ids, or unusable values (None when it is whole)."""
    import pandas as pd

    from . import predict as P

    if not path.is_file():
        return f"{path.name} is missing"
    try:
        frame = P.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        return f"{path.name} is empty or not a CSV ({str(err).splitlines()[0][:80]})"
    if "id" not in frame.columns:
        return f"{path.name} has no id column"
    if list(frame["id"]) != list(expected_ids):
        return f"{path.name} holds {len(frame)} rows, not the {len(expected_ids)} samples of the fold in order"
    problem = values_problem(frame, columns, probabilities)
    return None if problem is None else f"{path.name}: {problem}"
