"""Labelled, training-only shard sets made from a shard set's test split (pseudo-labels): the confidently predicted
records are copied (same image bytes, same columns) with their label added and `fold = -1` (a class index in the one
label column; a soft set's floats in every label column, named as the test shards'), one set per labelling
(`OUT/fold{k}` for a CV run's fold k, or OUT itself), each manifest recording where its labels come from under
`options["pseudo"]` (written by kitpkg/train/pseudo.py, read by kitpkg/train/extras.py).

Everything is written into a hidden folder beside OUT and renamed into place when complete, so OUT always holds one
whole result (the old one or the new one), never a mix; an OUT that holds another shard set (a convert output, the test
shards) is refused.
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
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import KitError
from ..fsutil import atomic_write
from .formats import WRITTEN_EXTENSIONS, sample_key, shard_format
from .manifest import (MANIFEST_NAME, TRAIN_ONLY_FOLD, Manifest, ShardInfo, label_counts, load_manifest,
                       resolve_manifest_path)
from .reader import iter_manifest_shard
from .writer import ShardWriter

PSEUDO_KEY = "pseudo"  # the manifest option a pseudo-label set's provenance is stored under
PSEUDO_FOLD = TRAIN_ONLY_FOLD
# {set (a teacher fold, None: one set in OUT itself): ({sample id: label}, the manifest options recording provenance)};
# a label is a class index, or (soft) a tuple of floats, one per label column
LabelledSets = Dict[Optional[int], Tuple[Dict[str, Any], Dict[str, Any]]]


def write_labelled_sets(out_dir: Path, test: Manifest, sets: LabelledSets, soft: bool = False
                        ) -> Dict[Optional[int], Manifest]:
    """Write each set's labelled test records of `test` as a training-only shard set (OUT/fold{k}, or OUT for the
    set None), all appearing together or not at all; return {set: its manifest}. `soft`: the labels are floats, one
    per label column of `test` (stored as float columns of the same names)."""
    _check_out(out_dir)
    cols = test.label_columns()
    if len(cols) > 1 and not soft:  # a hard pseudo-label is one class index; several columns need one value each
        raise KitError(f"{test.root}: pseudo-labels are one class per sample, but this shard set has the label columns "
                       f"{', '.join(cols)}; make them from a run with `kitpkg pseudo --run RUN --soft`")
    label_cols = (cols or ["target"]) if soft else [test.label_col or "target"]
    label_col = label_cols[0] if len(label_cols) == 1 else None
    schema = {**test.schema, **{c: "float" if soft else "int64" for c in label_cols}, "fold": "int64"}
    folders = {k: Path() if k is None else Path(f"fold{k}") for k in sets}
    infos: Dict[Optional[int], List[ShardInfo]] = {k: [] for k in sets}
    with _staged(out_dir) as staging:  # the new sets appear under `out` whole, manifests and shards together
        for index, shard in enumerate(test.shards):
            if shard.split == "test":
                targets = {k: (staging / folders[k] / f"pseudo-{len(infos[k]):05d}"
                               f"{shard_format(test.format).extension}", labels)
                           for k, (labels, _) in sets.items()}
                for k, info in _copy_shard(test, index, targets, label_cols, schema).items():
                    infos[k].append(info)
        for k, (_, options) in sets.items():
            (staging / folders[k]).mkdir(exist_ok=True)
            Manifest(format=test.format, schema=schema, shards=infos[k], id_col=test.id_col, label_col=label_col,
                     label_cols=label_cols if label_col is None else None, image_key=test.image_key,
                     image_size=test.image_size, aspect=test.aspect, num_folds=None,
                     class_counts=None if soft else label_counts(infos[k]), options=options
                     ).save(str(staging / folders[k]))
    return {k: load_manifest(str(out_dir / folders[k])) for k in sets}


def load_shards(shards: str) -> Manifest:
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
    return isinstance(data, dict) and bool((data.get("options") or {}).get(PSEUDO_KEY))


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


def _copy_shard(test: Manifest, index: int, targets: Dict[Optional[int], Tuple[Path, Dict[str, Any]]],
                label_cols: List[str], schema: Dict[str, str]) -> Dict[Optional[int], ShardInfo]:
    """Copy the labelled records of one test shard, read once, into one new shard per set ({set: (path, labels)});
    return the shards written (a set none of whose labelled records is in this shard gets none)."""
    with contextlib.ExitStack() as files:
        writers = {k: ShardWriter(files.enter_context(atomic_write(path)), test.format, schema,
                                  image_key=test.image_key) for k, (path, _) in targets.items()}
        for record in iter_manifest_shard(test, index):
            for k, (_, labels) in targets.items():
                if record.id in labels:
                    values, label = _label_fields(labels[record.id], label_cols)
                    writers[k].add(sample_key(record.id), record.id, record.image,
                                   {**record.fields, **values, "fold": PSEUDO_FOLD}, label)
        infos = {k: writers[k].finish(path.name, "train", PSEUDO_FOLD) for k, (path, _) in targets.items()}
    for k, info in list(infos.items()):
        if not info.ids:  # still in the staging folder: removing it leaves no trace
            targets[k][0].unlink()
            del infos[k]
    return infos


def _label_fields(label: Any, label_cols: List[str]) -> Tuple[Dict[str, Any], Any]:
    """({label column: value}, the shard's label: one value, or a list for several columns) of one pseudo-label: a
    class index, or a tuple of floats (soft), one per label column."""
    if not isinstance(label, tuple):
        return {label_cols[0]: int(label)}, int(label)
    values = [float(v) for v in label]
    return dict(zip(label_cols, values)), values[0] if len(values) == 1 else values
