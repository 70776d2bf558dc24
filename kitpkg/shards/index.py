"""`kitpkg index`: a manifest for shards written elsewhere (tf.io.TFRecordWriter files, plain or GZIP; webdataset tars).

The schema is inferred from the records (how, and which format a file is: its entry in formats.FORMATS), offsets and
ids come from one scan with the kit's own reader, and folds come from the popular file names (`train07-2071.tfrec` →
fold 7, or 7 mod K with `folds=K`). Nothing is re-encoded.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .. import fsutil
from ..errors import KitError
from .formats import SHARD_EXTENSIONS, RecordError, detect, shard_format
from .imaging import image_size
from .example import BYTES
from .manifest import MANIFEST_NAME, Manifest, ShardInfo, class_counts
from .options import ConvertOptions, split_label_cols
from .reader import iter_shard_file
from .resume import STATE_NAME
from .verify import scan_bytes

_FOLD_RE = re.compile(r"^(train|test|val|valid)[-_]?(?:f|fold)?(\d+)", re.IGNORECASE)


def find_shards(paths: Sequence[str]) -> List[str]:
    """Shard files named by `paths` (files, or folders searched recursively), sorted; KitError if none."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                found += [os.path.join(root, n) for n in names if n.lower().endswith(SHARD_EXTENSIONS)]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise KitError(f"{path}: no such file or folder")
    if not found:
        raise KitError(f"no {'/'.join(SHARD_EXTENSIONS)} files under {', '.join(paths)}")
    return sorted(set(os.path.abspath(p) for p in found))


def split_and_fold(name: str, folds: Optional[int]) -> Tuple[str, Optional[int]]:
    """('train'|'test', fold) from a file name: `train07-2071.tfrec` → ('train', 7); no number → fold None."""
    match = _FOLD_RE.match(os.path.basename(name))
    split = "test" if os.path.basename(name).lower().startswith("test") else "train"
    if split == "test" or not match:
        return split, None
    fold = int(match.group(2))
    return split, (fold % folds if folds else fold)


def _scan(path: str, fmt: str, id_col: str, label_cols: Sequence[str]):
    """(records' offsets, ids, labels, first record) of one shard; damage raises KitError naming file and offset.
    A label is the one label column's value, or the list of several columns' values."""
    offsets, ids, labels, first = [], [], [], None
    try:
        with fsutil.open_binary(path) as f:
            for record in iter_shard_file(f, fmt, os.path.basename(path), 0, id_col):
                first = first or record
                offsets.append(record.offset)
                ids.append(record.id)
                values = [record.fields.get(c) for c in label_cols]
                labels.append(values if len(values) > 1 else values[0] if values else None)
    except RecordError as err:
        raise KitError(f"cannot index {path}: {err.reason} at offset {err.offset}") from None
    return offsets, ids, labels, first


def _check_label_cols(label_cols: Sequence[str], schema: Dict[str, str], fmt: str, first: str) -> None:
    """KitError naming a label column the shards lack, or one of several that holds text (several must be numbers)."""
    if not schema:
        return  # no record at all: nothing to check against
    for col in label_cols:
        if col not in schema and not (len(label_cols) == 1 and col == shard_format(fmt).label_member):
            raise KitError(f"{first}: --label-col {col!r} is not a feature of these shards (features: "
                           f"{', '.join(schema)})")
        if len(label_cols) > 1 and schema[col] == BYTES:
            raise KitError(f"{first}: --label-col {col!r} holds text; with several label columns "
                           f"({','.join(label_cols)}) each must hold numbers (0/1 per label, or floats)")


def _refuse_to_replace(out: str) -> None:
    """KitError when `out` holds a manifest that `kitpkg index` did not write (convert's or pseudo's): replacing it
    would lose its label column, folds, rejected list and options."""
    path = os.path.join(out, MANIFEST_NAME)
    made_by_convert = os.path.exists(os.path.join(out, STATE_NAME))
    try:
        with open(path) as f:
            options = json.load(f).get("options") or {}
    except FileNotFoundError:
        options = None
    except (OSError, ValueError, AttributeError):
        options = {}  # unreadable: only the convert state file says whose it was
    if made_by_convert or (options is not None and "indexed_from" not in options):
        raise KitError(f"{path} was written by `kitpkg {'pseudo' if options and options.get('pseudo') else 'convert'}`"
                       " and already describes these shards (replacing it would lose the label column, folds and "
                       "rejected list); use it as it is, or pass --out ANOTHER_FOLDER to write a second manifest")


def index(paths: Sequence[str], out: Optional[str] = None, *, id_col: str = ConvertOptions.id_col,
          label_col: Union[None, str, Sequence[str]] = None, folds: Optional[int] = None) -> Manifest:
    """Scan foreign shards and write `manifest.json` into `out` (default: their common folder); return the Manifest.

    `label_col`: one feature/JSON field, or several ("a,b,c" or a list; each must hold numbers) recorded as the
    manifest's `label_cols`, as `kitpkg convert` records them."""
    label_cols = split_label_cols(label_col)
    if folds is not None and folds < 1:
        raise KitError(f"--folds must be ≥ 1 (fold = the number in the file name mod K), not {folds}")
    files = find_shards(paths)
    kinds = {detect(p) for p in files}
    if len(kinds) > 1:
        raise KitError(f"mixed shard formats/compressions {sorted(map(str, kinds))}: index each kind separately")
    fmt, compression = kinds.pop()
    out = os.path.abspath(out or os.path.commonpath([os.path.dirname(p) for p in files]))
    _refuse_to_replace(out)
    shards, schema, first_image = [], {}, None
    for path in files:
        offsets, ids, labels, first = _scan(path, fmt, id_col, label_cols)
        if first is not None:
            schema.update({k: v for k, v in shard_format(fmt).schema(first, path).items() if k not in schema})
            first_image = first_image or first.image
        sha, size, checksums = scan_bytes(path, offsets if compression is None else [0])
        inside = os.path.commonpath([out, path]) == out
        split, fold = split_and_fold(path, folds)
        shards.append(ShardInfo(os.path.relpath(path, out) if inside else path, split, fold, len(ids), size, sha,
                                offsets, ids, labels if label_cols and split == "train" else None,
                                checksums if compression is None else None))
    _check_label_cols(label_cols, schema, fmt, files[0])
    wh = image_size(first_image) if first_image else None
    fold_values = sorted({s.fold for s in shards if s.fold is not None})
    manifest = Manifest(format=fmt, schema=dict(sorted(schema.items())), shards=shards, id_col=id_col,
                        label_col=label_cols[0] if len(label_cols) == 1 else None,
                        label_cols=label_cols if len(label_cols) > 1 else None, compression=compression,
                        image_size=wh[0] if wh and wh[0] == wh[1] else None,
                        num_folds=(folds or (max(fold_values) + 1)) if fold_values else None,
                        class_counts=class_counts(shards, label_cols), options={"indexed_from": "foreign shards"})
    try:
        manifest.save(out)
    except OSError as err:
        raise KitError(f"cannot write the manifest into {out} ({err.strerror}); pass --out to a writable folder") \
            from None
    manifest.root = out
    return manifest
