"""Pseudo-labels: confident test predictions -> labelled shard sets that later configs add to training only.

`--run RUN` writes one set per finished fold of RUN into OUT/fold{k}/, each labelled from that fold model's own test
predictions (its fold k test file), never from their fold average: fold k of a later run trains only on teacher fold
k's set (see extras.py), so no fold learns from a model that saw its labels. `--predictions CSV` (predictions made
outside this CV) writes one set into OUT that every fold trains on.

What a pseudo-label is depends on the teacher's task kind (kitpkg/task.py):
  binary, multiclass  a hard class where the teacher is confident (--threshold / --low), as before
  multilabel, soft    --soft: every test sample with the teacher's probabilities, one float per label column
  regression          --soft: every test sample with the teacher's values (the CSV's units), one per label column
  ordinal             --soft: every test sample with the teacher's value on the class-index scale (a float in the label
                      column). An ordinal model outputs no probability, so --threshold has nothing to be confident
                      about, and its student trains as a regression of that scale: the value is what it learns from.
A kind asked for what it cannot give (--soft of a binary or multiclass run, hard labels of the others) is refused
naming the option. A --soft set's label columns are named as the teacher's (so as the student's) and hold floats.

This module chooses the labels and their provenance (extras.Provenance: the teacher run's config hash and fold, the
folds it trained on), from a run's fold test files through rundir and its state.json, or from a CSV; the sets are
written by kitpkg/shards/pseudo.py (the records copied from the test shards with the label added and `fold = -1`, whole
or not at all). The recorded provenance makes kitpkg refuse the sets as validation data (`data.shards`), and the loader
only ever draws them through `data.extra_train`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pandas as pd

from ..errors import KitError
from ..rundir import FOLD_TEST, RunDir, is_run_dir
from ..shards.manifest import Manifest
from ..shards.pseudo import load_shards, write_labelled_sets
from ..predictions import Predictions, read_predictions, task_of_columns
from ..tables import read_csv
from ..task import Task
from . import predict as P
from .extras import Provenance, split_fingerprint
from .runstate import RunState, manifest_fingerprint

# {teacher fold (None: a CSV): ({id: class index, or a --soft set's floats per label column}, provenance)}
Labelled = Dict[Optional[int], Tuple[Dict[str, Any], Provenance]]
HARD_KINDS = ("binary", "multiclass")  # confident classes; every other kind gives its values (--soft)
DEFAULT_THRESHOLD = 0.9


def check_request(kind: str, soft: bool, source: str) -> None:
    """KitError naming the option when a teacher of task `kind` cannot give the pseudo-labels asked for: hard classes
    come from binary and multiclass runs only, --soft values from the other kinds only."""
    if soft and kind in HARD_KINDS:
        raise KitError(f"--soft: {source} is a {kind} run, whose pseudo-labels are confident classes (--threshold, "
                       f"--low); drop --soft")
    if not soft and kind not in HARD_KINDS:
        what = "values" if kind in ("regression", "ordinal") else "probabilities"
        raise KitError(f"{source}: a {kind} run has no confident classes to pseudo-label with; add --soft (every test "
                       f"sample with the teacher's {what} as float targets)")


def select_soft(pred: Predictions) -> Dict[str, Tuple[float, ...]]:
    """{id: the teacher's prediction per label column} of every row: probabilities (multilabel, soft) or values
    (regression, ordinal), in label column order."""
    values = pred.pred.reshape(len(pred.ids), -1)
    return {i: tuple(float(v) for v in row) for i, row in zip(pred.ids, values)}


def select_confident(pred: Predictions, task: Task, high: float, low: Optional[float]) -> Dict[str, int]:
    """{id: label} of confident rows: binary p >= high -> 1, p <= low -> 0; multi-class max prob >= high -> argmax;
    one scored class (train.score_class, the task's `score_index`): its p >= high -> that class, p <= low -> the
    likeliest other class (the student trains on all classes, so a confident "not this class" still needs one)."""
    low = _checked_low(high, low)
    ids, score_index = pred.ids, task.score_index
    if not task.scored_binary:
        keep = pred.pred.max(1) >= high
        return dict(zip(ids[keep], pred.pred.argmax(1)[keep].tolist()))
    scored = pred.pred
    if score_index is None:
        negative = [0] * len(ids)
    else:
        others = pred.class_probs.copy()
        others[:, score_index] = -1.0
        negative = others.argmax(1).tolist()
    positive = 1 if score_index is None else score_index
    return {i: positive if p >= high else int(n) for i, p, n in zip(ids, scored, negative) if p >= high or p <= low}


def _checked_low(high: float, low: Optional[float]) -> float:
    low = 1.0 - high if low is None else low
    if not 0.0 <= low < high <= 1.0:
        raise KitError(f"--low {low} / --threshold {high}: need 0 <= low < threshold <= 1")
    return low


def make_pseudo_labels(out: str, run_dir: Optional[str] = None, predictions: Optional[str] = None,
                       shards: Optional[str] = None, high: Optional[float] = None, low: Optional[float] = None,
                       soft: bool = False) -> Dict[Optional[int], Manifest]:
    """Write pseudo-labelled test samples as training-only shard sets into `out`: one per finished fold of the run
    `run_dir` (OUT/fold{k}), or one from a predictions CSV (OUT itself); return {teacher fold or None: manifest}.
    Confident classes by `high`/`low` (default 0.9 / 1 - high), or with `soft` every sample's predicted values."""
    if soft:
        _check_soft_options(high, low, run_dir, predictions)
        test, labelled = _from_run(run_dir, shards, None, None, soft=True)
    else:
        high = DEFAULT_THRESHOLD if high is None else high
        low = _checked_low(high, low)  # recorded as used: --low's default is 1 - threshold
        if predictions is None and run_dir is not None:
            test, labelled = _from_run(run_dir, shards, high, low)
        else:
            test, labelled = _from_csv(predictions, run_dir, shards, high, low)
    sets = {k: (labels, provenance.options()) for k, (labels, provenance) in labelled.items()}
    return write_labelled_sets(Path(out), test, sets, soft=soft)


def _check_soft_options(high: Optional[float], low: Optional[float], run_dir: Optional[str],
                        predictions: Optional[str]) -> None:
    """--soft keeps every test sample with the teacher's own fold predictions: refuse what would say otherwise."""
    if high is not None or low is not None:
        option = "--threshold" if high is not None else "--low"
        raise KitError(f"{option}: --soft keeps every test sample with the teacher's values, nothing is selected by "
                       f"confidence; drop {option}")
    if predictions is not None or run_dir is None:
        raise KitError("--soft: takes --run RUN (its task says what the predicted values are and its folds give one "
                       "set each); a --predictions CSV gives hard labels only")


def _from_run(run_dir: str, shards: Optional[str], high: Optional[float], low: Optional[float], soft: bool = False
              ) -> Tuple[Manifest, Labelled]:
    """The run's shards and, per finished fold, the labels its model gives the test samples with their provenance."""
    state = RunState.read(run_dir)
    test = _run_manifest(run_dir, state, shards)
    if not test.select("test"):
        raise KitError(f"{run_dir}: its shards ({test.root}) have no test split, so no fold wrote {FOLD_TEST} "
                       f"to pseudo-label from; convert the data again with --test-csv (into a new folder) and train "
                       f"a run on those shards with `kitpkg cv`")
    folds = [k for k in state.done_folds() if _test_scores(run_dir, k).exists()]
    if not folds:
        raise KitError(f"{run_dir}: no finished fold has test predictions ({FOLD_TEST}); finish its folds "
                       f"with `kitpkg cv` first")
    config, task = state.config, state.task
    check_request(task.kind, soft, run_dir)
    score_index = None
    if not soft:
        from .scoring import score_class_index

        score_index = score_class_index(config.get("train.score_class"), test.classes(), task.outputs, test.root)
        task = task.with_score_index(score_index)
    split = split_fingerprint(test)
    labelled: Labelled = {}
    for k in folds:
        pred = P.average_test([read_csv(_test_scores(run_dir, k))], task,
                              config.get("predict.average", "prob"))  # one fold: its own probabilities
        provenance = Provenance(high, low, len(pred), state.config_hash, k, [f for f in test.folds() if f != k],
                                split, score_index, soft_kind=task.kind if soft else None)
        source = f"fold {k} of {run_dir}"
        labels = _soft(pred, task, test, source) if soft else _confident(pred, task, high, low, test, source)
        labelled[k] = (labels, provenance)
    return test, labelled


def _test_scores(run_dir: str, k: int) -> Path:
    return RunDir(run_dir).fold_test(k)


def _run_manifest(run_dir: str, state: RunState, shards: Optional[str]) -> Manifest:
    """The shard set the run trained on (at `shards`, or where its state.json last saw it), checked by fingerprint:
    its folds are what the provenance records."""
    where = shards or _run_shards(run_dir, state)
    manifest = load_shards(where)
    if manifest_fingerprint(manifest) != state.fingerprints.get("manifest"):
        raise KitError(f"--shards {where}: not the shard set {run_dir} was trained on (another manifest); pass the "
                       f"run's own shards (the same `kitpkg convert` output and size)")
    return manifest


def _run_shards(run_dir: str, state: RunState) -> str:
    if not state.shards:
        raise KitError("--shards: which test shards? (the run directory does not say)")
    shards = os.path.normpath(os.path.join(run_dir, state.shards))
    if not os.path.exists(shards):
        raise KitError(f"{shards}: the run's shards are not here (moved machine?); pass --shards")
    return shards


def _from_csv(predictions: Optional[str], run_dir: Optional[str], shards: Optional[str], high: float,
              low: Optional[float]) -> Tuple[Manifest, Labelled]:
    """The test shards and the labels of a predictions CSV (one set, every fold trains on it)."""
    if predictions is None:
        raise KitError("give --run RUN_DIR or --predictions CSV")
    if not os.path.exists(predictions):
        raise KitError(f"{predictions}: no such predictions file; give a CSV with id and prediction columns")
    beside = Path(predictions).parent
    if Path(predictions).name == RunDir(beside).test_predictions.name and is_run_dir(beside):
        raise KitError(f"--predictions {predictions}: the fold average of a CV run, whose models saw every fold's "
                       f"labels; use --run {beside} (one set per fold)")
    pred = pd.read_csv(predictions, dtype={"id": str})
    if "id" not in pred or "prediction" not in pred:
        raise KitError(f"{predictions}: expected columns id, prediction (as in RUN/test_predictions.csv)")
    if shards is None:
        if run_dir is None:
            raise KitError("--shards: which test shards? (give --shards, or --run with a run directory)")
        shards = _run_shards(run_dir, RunState.read(run_dir))
    test = load_shards(shards)
    labels = _confident(pred, task_of_columns(pred), high, low, test, predictions)
    return test, {None: (labels, Provenance(high, low, len(pred)))}


def _soft(pred: pd.DataFrame, task: Task, test: Manifest, source: str) -> Dict[str, Tuple[float, ...]]:
    """Every test sample's predicted values, one per label column of `test` (the run's shards, checked by
    fingerprint: its label columns are the ones the teacher predicted)."""
    test_ids = _test_ids(test, pred, source)
    return {i: v for i, v in select_soft(read_predictions(pred, task)).items() if i in test_ids}


def _test_ids(test: Manifest, pred: pd.DataFrame, source: str) -> set:
    """The test ids of `test`, refused when it has none or `pred` matches none of them."""
    test_ids = set(P.fold_ids(test, "test"))
    if not test_ids:
        raise KitError(f"--shards {test.root}: has no test split to take the images from; give the shards "
                       f"converted with --test-csv")
    ids = pred["id"].astype(str)
    if not test_ids & set(ids):
        raise KitError(f"{source}: none of its {len(ids)} ids is a test id of {test.root} (e.g. {ids.iloc[0]!r} vs "
                       f"{min(test_ids)!r}); predictions of other data, or another id column?")
    return test_ids


def _confident(pred: pd.DataFrame, task: Task, high: float, low: Optional[float], test: Manifest, source: str
               ) -> Dict[str, int]:
    """The confident labels of `pred`, refused when its ids are not the test shards' or none is confident."""
    test_ids = _test_ids(test, pred, source)
    confident = select_confident(read_predictions(pred, task), task, high, low)
    labels = {i: label for i, label in confident.items() if i in test_ids}
    if not labels:
        raise KitError(f"no test prediction is confident at threshold {high} ({source}); lower --threshold")
    return labels
