"""Pseudo-labels: confident test predictions -> labelled shard sets that later configs add to training only.

`--run RUN` writes one set per finished fold of RUN into OUT/fold{k}/, each labelled from that fold model's own test
predictions (its fold k test file), never from their fold average: fold k of a later run trains only on teacher fold
k's set (see extras.py), so no fold learns from a model that saw its labels. `--predictions CSV` (predictions made
outside this CV) writes one set into OUT that every fold trains on.

The records are copied from the test shards (same image bytes, same columns) with the predicted label added and
`fold = -1`; each manifest records where its labels come from in `options.pseudo` (extras.Provenance), so kitpkg
refuses the sets as validation data (`data.shards`) and the loader only ever draws them through `data.extra_train`.
Everything is written into a hidden folder beside `--out` and renamed into place when complete, so `--out` always
holds one whole result (the old one or the new one), never a mix; an `--out` that holds another shard set (a convert
output, the test shards) is refused.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pandas as pd

from ..errors import KitError
from ..fsutil import atomic_write
from ..rundir import FOLD_TEST, RunDir, is_run_dir
from ..shards.manifest import (MANIFEST_NAME, TRAIN_ONLY_FOLD, Manifest, ShardInfo, label_counts, load_manifest,
                               resolve_manifest_path)
from ..shards.reader import iter_manifest_shard
from ..shards.formats import WRITTEN_EXTENSIONS, sample_key, shard_format
from ..shards.writer import ShardWriter
from ..tables import read_csv
from . import predict as P
from .extras import Provenance, split_fingerprint
from .runstate import RunState, manifest_fingerprint

PSEUDO_FOLD = TRAIN_ONLY_FOLD
Labelled = Dict[Optional[int], Tuple[Dict[str, int], Provenance]]  # {teacher fold (None: a CSV): (labels, provenance)}


def select_confident(pred: pd.DataFrame, high: float, low: Optional[float], score_index: Optional[int] = None
                     ) -> Dict[str, int]:
    """{id: label} of confident rows: binary p >= high -> 1, p <= low -> 0; multi-class max prob >= high -> argmax;
    one scored class (train.score_class, `score_index`): its p >= high -> that class, p <= low -> the likeliest other
    class (the student trains on all classes, so a confident "not this class" still needs one)."""
    low = _checked_low(high, low)
    probs = [c for c in pred.columns if c.startswith("prob_")]
    ids = pred["id"].astype(str).to_numpy()
    if probs and score_index is None:
        p = pred[probs].to_numpy()
        keep = p.max(1) >= high
        return dict(zip(ids[keep], p.argmax(1)[keep].tolist()))
    scored = pred["prediction"].astype(float).to_numpy()
    if score_index is None:
        negative = [0] * len(ids)
    else:
        others = pred[probs].to_numpy().copy()
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
    out_dir = Path(out)
    _check_out(out_dir)
    label_col = test.label_col or "target"
    schema = {**test.schema, label_col: "int64", "fold": "int64"}
    folders = {k: Path() if k is None else Path(f"fold{k}") for k in labelled}
    infos: Dict[Optional[int], List[ShardInfo]] = {k: [] for k in labelled}
    with _staged(out_dir) as staging:  # the new sets appear under `out` whole, manifests and shards together
        for index, shard in enumerate(test.shards):
            if shard.split == "test":
                targets = {k: (staging / folders[k] / f"pseudo-{len(infos[k]):05d}"
                               f"{shard_format(test.format).extension}", labels)
                           for k, (labels, _) in labelled.items()}
                for k, info in _copy_shard(test, index, targets, label_col, schema).items():
                    infos[k].append(info)
        for k, (_, provenance) in labelled.items():
            (staging / folders[k]).mkdir(exist_ok=True)
            Manifest(format=test.format, schema=schema, shards=infos[k], id_col=test.id_col, label_col=label_col,
                     image_key=test.image_key, image_size=test.image_size, aspect=test.aspect, num_folds=None,
                     class_counts=label_counts(infos[k]), options=provenance.options()).save(str(staging / folders[k]))
    return {k: load_manifest(str(out_dir / folders[k])) for k in labelled}


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
    config, num_classes = state.config, state.fingerprints.get("num_classes", 1)
    from .scoring import score_class_index

    score_index = score_class_index(config.get("train.score_class"), test.classes(), num_classes, test.root)
    split = split_fingerprint(test)
    labelled: Labelled = {}
    for k in folds:
        pred = P.average_test([read_csv(_test_scores(run_dir, k))], num_classes == 1,
                              config.get("predict.average", "prob"), score_index)  # one fold: its own probabilities
        provenance = Provenance(high, low, len(pred), state.config_hash, k,
                                [f for f in test.folds() if f != k], split, score_index)
        labelled[k] = (_confident(pred, high, low, score_index, test, f"fold {k} of {run_dir}"), provenance)
    return test, labelled


def _test_scores(run_dir: str, k: int) -> Path:
    return RunDir(run_dir).fold_test(k)


def _run_manifest(run_dir: str, state: RunState, shards: Optional[str]) -> Manifest:
    """The shard set the run trained on (at `shards`, or where its state.json last saw it), checked by fingerprint:
    its folds are what the provenance records."""
    where = shards or _run_shards(run_dir, state)
    manifest = _load_shards(where)
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
    test = _load_shards(shards)
    labels = _confident(pred, high, low, None, test, predictions)
    return test, {None: (labels, Provenance(high, low, len(pred)))}


def _confident(pred: pd.DataFrame, high: float, low: Optional[float], score_index: Optional[int], test: Manifest,
               source: str) -> Dict[str, int]:
    """The confident labels of `pred`, refused when its ids are not the test shards' or none is confident."""
    test_ids = set(P.fold_ids(test, "test"))
    if not test_ids:
        raise KitError(f"--shards {test.root}: has no test split to take the images from; give the shards "
                       f"converted with --test-csv")
    ids = pred["id"].astype(str)
    if not test_ids & set(ids):
        raise KitError(f"{source}: none of its {len(ids)} ids is a test id of {test.root} (e.g. {ids.iloc[0]!r} vs "
                       f"{min(test_ids)!r}); predictions of other data, or another id column?")
    labels = {i: label for i, label in select_confident(pred, high, low, score_index).items() if i in test_ids}
    if not labels:
        raise KitError(f"no test prediction is confident at threshold {high} ({source}); lower --threshold")
    return labels


def _load_shards(shards: str) -> Manifest:
    """The manifest at `shards` (a manifest folder or .json, or convert's OUT holding one size)."""
    path = shards if shards.endswith(".json") or os.path.exists(os.path.join(shards, MANIFEST_NAME)) else None
    return load_manifest(path or resolve_manifest_path(shards, _only_size(shards)))


_SET_FILE = rf"(manifest\.json|pseudo-\d{{5}}({'|'.join(map(re.escape, WRITTEN_EXTENSIONS))}))"
_OURS = re.compile(rf"^({_SET_FILE}|\.{_SET_FILE}\..*\.tmp)$")  # a set's files and the temp names of a killed run
_FOLD_DIR = re.compile(r"^fold\d+$")  # one teacher fold's set (`--run`)


def _check_out(out_dir: Path) -> None:
    """Refuse an `--out` that is a file, holds another shard set, or holds files a pseudo-label run did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise KitError(f"--out {out_dir}: is a file; give a folder for the pseudo-label shard set")
    if not out_dir.is_dir():
        return
    manifests = [out_dir / MANIFEST_NAME, *out_dir.glob(f"*/{MANIFEST_NAME}")]
    for path in manifests:
        if path.exists() and not _is_pseudo_manifest(path):
            raise KitError(f"--out {out_dir}: holds another shard set ({path}); pseudo-labels never replace it: "
                           f"choose a new folder")
    folders = [out_dir, *(p for p in out_dir.iterdir() if p.is_dir() and _FOLD_DIR.match(p.name))]
    foreign = sorted(str(p.relative_to(out_dir)) for folder in folders for p in folder.iterdir()
                     if not _OURS.match(p.name) and p not in folders)
    if foreign:
        raise KitError(f"--out {out_dir}: holds files a pseudo-label run did not write ({', '.join(foreign[:3])}); "
                       f"choose an empty or new folder")


def _is_pseudo_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool((data.get("options") or {}).get("pseudo"))


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A fresh folder beside `out_dir` to write into; on success it replaces `out_dir` by renames, on failure it goes.

    A kill leaves `out_dir` as it was (the old complete set, or nothing) plus a hidden staging folder, which the next
    run into the same `out_dir` removes -- as it puts back an old set that a kill caught between the two renames."""
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.kitpkg-new-", dir=parent))
    os.chmod(staging, 0o755)  # mkdtemp makes 0700; shard sets are shared (Drive, Kaggle datasets)
    try:
        yield staging
        if out_dir.exists():
            old = staging.with_name(staging.name.replace(".kitpkg-new-", ".kitpkg-old-"))
            os.rename(out_dir, old)
            os.rename(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _clean_stale(out_dir: Path) -> None:
    """Remove staging folders that killed runs into `out_dir` left; restore an old set a kill left moved aside."""
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.kitpkg-old-*"):
        if not out_dir.exists() and _holds_sets(path):
            os.rename(path, out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.kitpkg-new-*"):
        shutil.rmtree(path, ignore_errors=True)


def _holds_sets(folder: Path) -> bool:
    """Whether a folder holds a finished result: a set's manifest, or per-fold sets' manifests."""
    return (folder / MANIFEST_NAME).exists() or any(folder.glob(f"fold*/{MANIFEST_NAME}"))


def _only_size(shards: str) -> int:
    sizes = [p.name for p in Path(shards).glob("*") if (p / "manifest.json").exists() and p.name.isdigit()]
    if len(sizes) != 1:
        raise KitError(f"--shards {shards}: holds sizes {sizes or 'none'}; pass the OUT/<size> folder")
    return int(sizes[0])


def _copy_shard(test: Manifest, index: int, targets: Dict[Optional[int], Tuple[Path, Dict[str, int]]],
                label_col: str, schema: Dict[str, str]) -> Dict[Optional[int], ShardInfo]:
    """Copy the confidently predicted records of one test shard, read once, into one new shard per set ({set: (path,
    labels)}); return the shards written (a set none of whose labelled records is in this shard gets none)."""
    with contextlib.ExitStack() as files:
        writers = {k: ShardWriter(files.enter_context(atomic_write(path)), test.format, schema,
                                  image_key=test.image_key) for k, (path, _) in targets.items()}
        for record in iter_manifest_shard(test, index):
            for k, (_, labels) in targets.items():
                if record.id in labels:
                    label = int(labels[record.id])
                    writers[k].add(sample_key(record.id), record.id, record.image,
                                   {**record.fields, label_col: label, "fold": PSEUDO_FOLD}, label)
        infos = {k: writers[k].finish(path.name, "train", PSEUDO_FOLD) for k, (path, _) in targets.items()}
    for k, info in list(infos.items()):
        if not info.ids:  # still in the staging folder: removing it leaves no trace
            targets[k][0].unlink()
            del infos[k]
    return infos
