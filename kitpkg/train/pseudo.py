"""Pseudo-labels: confident test predictions -> labelled shard sets that later configs add to training only.

`--run RUN` writes one set per finished fold of RUN into OUT/fold{k}/, each labelled from that fold model's own test
predictions (its fold k test file), never from their fold average: fold k of a later run trains only on teacher fold
k's set (see extras.py), so no fold learns from a model that saw its labels. `--predictions CSV` (predictions made
outside this CV) writes one set into OUT that every fold trains on.

This module chooses the labels and their provenance (extras.Provenance: the teacher run's config hash and fold, the
folds it trained on), from a run's fold test files through rundir and its state.json, or from a CSV; the sets are
written by kitpkg/shards/pseudo.py (the records copied from the test shards with the label added and `fold = -1`, whole
or not at all). The recorded provenance makes kitpkg refuse the sets as validation data (`data.shards`), and the loader
only ever draws them through `data.extra_train`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

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

Labelled = Dict[Optional[int], Tuple[Dict[str, int], Provenance]]  # {teacher fold (None: a CSV): (labels, provenance)}


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
                       shards: Optional[str] = None, high: float = 0.9, low: Optional[float] = None
                       ) -> Dict[Optional[int], Manifest]:
    """Write confident test samples as training-only shard sets into `out`: one per finished fold of the run
    `run_dir` (OUT/fold{k}), or one from a predictions CSV (OUT itself); return {teacher fold or None: manifest}."""
    low = _checked_low(high, low)  # recorded as used: --low's default is 1 - threshold
    if predictions is None and run_dir is not None:
        test, labelled = _from_run(run_dir, shards, high, low)
    else:
        test, labelled = _from_csv(predictions, run_dir, shards, high, low)
    sets = {k: (labels, provenance.options()) for k, (labels, provenance) in labelled.items()}
    return write_labelled_sets(Path(out), test, sets)


def _from_run(run_dir: str, shards: Optional[str], high: float, low: Optional[float]) -> Tuple[Manifest, Labelled]:
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
    if task.kind not in ("binary", "multiclass"):
        raise KitError(f"{run_dir}: a {task.kind} run has no confident classes to pseudo-label with; pseudo-labels "
                       f"come from binary or multi-class runs")
    from .scoring import score_class_index

    score_index = score_class_index(config.get("train.score_class"), test.classes(), task.outputs, test.root)
    task = task.with_score_index(score_index)
    split = split_fingerprint(test)
    labelled: Labelled = {}
    for k in folds:
        pred = P.average_test([read_csv(_test_scores(run_dir, k))], task,
                              config.get("predict.average", "prob"))  # one fold: its own probabilities
        provenance = Provenance(high, low, len(pred), state.config_hash, k,
                                [f for f in test.folds() if f != k], split, score_index)
        labelled[k] = (_confident(pred, task, high, low, test, f"fold {k} of {run_dir}"), provenance)
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


def _confident(pred: pd.DataFrame, task: Task, high: float, low: Optional[float], test: Manifest, source: str
               ) -> Dict[str, int]:
    """The confident labels of `pred`, refused when its ids are not the test shards' or none is confident."""
    test_ids = set(P.fold_ids(test, "test"))
    if not test_ids:
        raise KitError(f"--shards {test.root}: has no test split to take the images from; give the shards "
                       f"converted with --test-csv")
    ids = pred["id"].astype(str)
    if not test_ids & set(ids):
        raise KitError(f"{source}: none of its {len(ids)} ids is a test id of {test.root} (e.g. {ids.iloc[0]!r} vs "
                       f"{min(test_ids)!r}); predictions of other data, or another id column?")
    confident = select_confident(read_predictions(pred, task), task, high, low)
    labels = {i: label for i, label in confident.items() if i in test_ids}
    if not labels:
        raise KitError(f"no test prediction is confident at threshold {high} ({source}); lower --threshold")
    return labels
