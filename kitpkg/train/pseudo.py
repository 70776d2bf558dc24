"""Pseudo-labels: confident test predictions -> a labelled shard set that later configs add to training only.

The records are copied from the test shards (same image bytes, same columns) with the predicted label added and
`fold = -1`; the manifest is marked `options.pseudo`, so kitpkg refuses it as validation data (`data.shards`) and the
loader only ever draws it through `data.extra_train`. The set is written into a hidden folder beside `--out` and
renamed into place when complete, so `--out` always holds one whole set (the old one or the new one), never a mix;
an `--out` that holds another shard set (a convert output, the test shards) is refused.
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
from ..shards.manifest import (MANIFEST_NAME, TRAIN_ONLY_FOLD, Manifest, ShardInfo, label_counts, load_manifest,
                               resolve_manifest_path)
from ..shards.reader import iter_manifest_shard
from ..shards.formats import WRITTEN_EXTENSIONS, sample_key, shard_format
from ..shards.writer import ShardWriter

PSEUDO_FOLD = TRAIN_ONLY_FOLD


def select_confident(pred: pd.DataFrame, high: float, low: Optional[float]) -> Dict[str, int]:
    """{id: label} of confident rows: binary p >= high -> 1, p <= low -> 0; multi-class max prob >= high -> argmax."""
    probs = [c for c in pred.columns if c.startswith("prob_")]
    if probs:
        p = pred[probs].to_numpy()
        keep = p.max(1) >= high
        return dict(zip(pred["id"][keep].astype(str), p.argmax(1)[keep].tolist()))
    low = 1.0 - high if low is None else low
    if not 0.0 <= low < high <= 1.0:
        raise KitError(f"--low {low} / --threshold {high}: need 0 <= low < threshold <= 1")
    labels = {}
    for i, p in zip(pred["id"].astype(str), pred["prediction"].astype(float)):
        if p >= high:
            labels[i] = 1
        elif p <= low:
            labels[i] = 0
    return labels


def _sources(run_dir: Optional[str], predictions: Optional[str], shards: Optional[str]) -> Tuple[pd.DataFrame, str]:
    if predictions is None:
        if run_dir is None:
            raise KitError("give --run RUN_DIR or --predictions CSV")
        predictions = os.path.join(run_dir, "test_predictions.csv")
    if not os.path.exists(predictions):
        raise KitError(f"{predictions}: no test predictions; run `kitpkg cv` (or `kitpkg predict`) first")
    pred = pd.read_csv(predictions, dtype={"id": str})
    if "id" not in pred or "prediction" not in pred:
        raise KitError(f"{predictions}: expected columns id, prediction (as in RUN/test_predictions.csv)")
    if shards is None:
        state = json.loads(Path(run_dir or ".", "state.json").read_text()) if run_dir else {}
        if not state.get("shards"):
            raise KitError("--shards: which test shards? (the run directory does not say)")
        shards = os.path.normpath(os.path.join(run_dir, state["shards"]))
        if not os.path.exists(shards):
            raise KitError(f"{shards}: the run's shards are not here (moved machine?); pass --shards")
    return pred, shards


def make_pseudo_labels(out: str, run_dir: Optional[str] = None, predictions: Optional[str] = None,
                       shards: Optional[str] = None, high: float = 0.9, low: Optional[float] = None) -> Manifest:
    """Write confident test samples (from a run's or a CSV's predictions) as a train-only shard set into `out`."""
    pred, shards = _sources(run_dir, predictions, shards)
    path = shards if shards.endswith(".json") or os.path.exists(os.path.join(shards, "manifest.json")) else None
    test = load_manifest(path or resolve_manifest_path(shards, _only_size(shards)))
    label_col = test.label_col or "target"
    labels = select_confident(pred, high, low)
    if not labels:
        raise KitError(f"no test prediction is confident at threshold {high}; lower --threshold")
    out_dir = Path(out)
    _check_out(out_dir)
    schema = {**test.schema, label_col: "int64", "fold": "int64"}
    infos: List[ShardInfo] = []
    with _staged(out_dir) as staging:  # the new set appears under `out` whole, manifest and shards together
        for index, shard in enumerate(test.shards):
            if shard.split != "test":
                continue
            name = f"pseudo-{len(infos):05d}{shard_format(test.format).extension}"
            try:
                infos.append(_copy_shard(test, index, staging / name, labels, label_col, schema))
            except _NothingKept:
                pass
        manifest = Manifest(format=test.format, schema=schema, shards=infos, id_col=test.id_col,
                            label_col=label_col, image_key=test.image_key, image_size=test.image_size,
                            aspect=test.aspect, num_folds=None, class_counts=label_counts(infos),
                            options={"pseudo": {"threshold": high, "low": low, "source_predictions": len(pred)}})
        manifest.save(str(staging))
    return load_manifest(str(out_dir))


_SET_FILE = rf"(manifest\.json|pseudo-\d{{5}}({'|'.join(map(re.escape, WRITTEN_EXTENSIONS))}))"
_OURS = re.compile(rf"^({_SET_FILE}|\.{_SET_FILE}\..*\.tmp)$")  # a set's files and the temp names of a killed run


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
    foreign = sorted(p.name for p in out_dir.iterdir() if not _OURS.match(p.name))
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
        if not out_dir.exists() and (path / MANIFEST_NAME).exists():
            os.rename(path, out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.kitpkg-new-*"):
        shutil.rmtree(path, ignore_errors=True)


def _only_size(shards: str) -> int:
    sizes = [p.name for p in Path(shards).glob("*") if (p / "manifest.json").exists() and p.name.isdigit()]
    if len(sizes) != 1:
        raise KitError(f"--shards {shards}: holds sizes {sizes or 'none'}; pass the OUT/<size> folder")
    return int(sizes[0])


def _copy_shard(test: Manifest, index: int, path: Path, labels: Dict[str, int], label_col: str,
                schema: Dict[str, str]) -> ShardInfo:
    """Copy the confidently predicted records of one test shard with their new label (_NothingKept when none are)."""
    with atomic_write(path) as f:
        writer = ShardWriter(f, test.format, schema, image_key=test.image_key)
        for record in iter_manifest_shard(test, index):
            if record.id in labels:
                label = int(labels[record.id])
                writer.add(sample_key(record.id), record.id, record.image,
                           {**record.fields, label_col: label, "fold": PSEUDO_FOLD}, label)
        info = writer.finish(path.name, "train", PSEUDO_FOLD)
        if not info.ids:
            raise _NothingKept
    return info


class _NothingKept(Exception):
    """No record of the shard was confident: the temp file is dropped, no empty shard appears."""
