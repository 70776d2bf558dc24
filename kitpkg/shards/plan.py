"""The conversion plan: CSV rows matched to source files, typed columns, folds, and which sample goes in which shard.

Everything here is a pure function of the inputs and options (no image is decoded), so a re-run reproduces the same
plan and a resumed conversion knows exactly what each shard must hold. CSV problems raise KitError before any work.
A sample's label is its one label column's value (text, int or float, as typed), or with several label columns the
list of their values (each must be a number); which labels the folds balance is folds.py's choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import KitError
from .example import BYTES, FLOAT, INT64
from .folds import is_fractional, stratified_folds
from .sources import IMAGE_SUFFIXES, index_by_id, stem_of
from .formats import IMAGE_KEY, sample_key


@dataclass
class Sample:
    """One CSV row that has a source file: its id, file, typed row (incl. fold) and label (a list: several columns)."""

    id: str
    key: str  # tar key: the id without dots or slashes (webdataset splits keys at the first dot)
    file: str
    row: Dict[str, Any]
    fold: Optional[int]
    label: Any = None


@dataclass
class ShardPlan:
    """One shard to write: its file name, split, fold and samples in order."""

    file: str
    split: str
    fold: Optional[int]
    samples: List[Sample]


@dataclass
class Plan:
    """Shards in writing order, the column schema, and the rows rejected before decoding."""

    shards: List[ShardPlan]
    schema: Dict[str, str]
    num_folds: Optional[int]
    rejected: List[Dict[str, str]] = field(default_factory=list)
    classes: List[Any] = field(default_factory=list)  # the labels when they are classes (one column), else []


def read_csv(path, required: Sequence[str], id_col: str):
    """Read a CSV with pandas (ids as text); KitError naming the file or the missing column."""
    import pandas as pd  # lazy: pandas is slow to import and only conversion needs it

    try:
        df = pd.read_csv(path, dtype={id_col: str}, keep_default_na=True)
    except FileNotFoundError:
        raise KitError(f"{path}: CSV not found") from None
    except Exception as err:
        raise KitError(f"{path}: cannot read the CSV ({type(err).__name__}: {err})") from None
    _refuse_duplicate_columns(path)
    for col in required:
        if col and col not in df.columns:
            raise KitError(f"{path}: no column {col!r} (columns: {', '.join(map(str, df.columns))}); "
                           f"name the right one with the matching --*-col option")
    return df


def _refuse_duplicate_columns(path) -> None:
    """KitError naming a column the header has twice (pandas would silently rename the second one `NAME.1`)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    seen = set()
    for name in (h.strip().lstrip("\ufeff") for h in header):
        if name in seen:
            raise KitError(f"{path}: the header has two columns named {name!r}; rename or remove one")
        seen.add(name)


def _nothing_to_convert(csv, df, id_col: str, rejected: List[Dict[str, str]]) -> KitError:
    """Why a CSV gave no training sample, naming what was looked for."""
    if df.empty:
        return KitError(f"{csv}: the CSV has a header but no rows; give the train CSV with one row per image")
    first = next((r for r in rejected if f"{_name(csv)} line" in r["reason"]), None)
    why = f" (first: {first['id'] or 'a row'}: {first['reason']})" if first else ""
    return KitError(f"{csv}: none of its {len(df)} rows became a sample{why}; --id-col {id_col!r} must hold the "
                    "image file names (with or without extension) of the source folder/.zip")


def column_kinds(df) -> Dict[str, str]:
    """Feature type of each column: ints (and bools) → int64, floats → float, everything else → bytes."""
    kinds = {}
    for col in df.columns:
        kind = df[col].dtype.kind
        kinds[str(col)] = INT64 if kind in "iub" else FLOAT if kind == "f" else BYTES
    return kinds


def _value(v: Any, kind: str) -> Any:
    """A CSV cell as a plain Python value of the column's kind (missing text → '', missing number → NaN)."""
    if kind == BYTES:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    if kind == INT64:
        return int(v)
    return float(v)


def _lookup_key(value: str) -> str:
    """The file stem a CSV id refers to (ids may be given with or without an image extension)."""
    return stem_of(value) if value.lower().endswith(IMAGE_SUFFIXES) else value


def _rows(df, kinds: Dict[str, str], id_col: str, csv_name: str, files: Dict[str, str], seen: Dict[str, str],
          rejected: List[Dict[str, str]], used: set, label_cols: Sequence[str]) -> List[Sample]:
    samples = []
    records = df.to_dict("records")
    for line, rec in enumerate(records, start=2):  # line 1 is the header
        raw = rec[id_col]
        if raw is None or (isinstance(raw, float) and math.isnan(raw)) or not str(raw).strip():
            rejected.append({"id": "", "file": "", "reason": f"{csv_name} line {line}: empty {id_col!r}"})
            continue
        sid = str(raw).strip()
        key = _lookup_key(sid)
        if key in seen:
            rejected.append({"id": sid, "file": files.get(key, ""),
                             "reason": f"duplicate id: {csv_name} line {line} repeats {seen[key]} (kept the first)"})
            continue
        seen[key] = f"{csv_name} line {line}"
        if key not in files:
            rejected.append({"id": sid, "file": "", "reason": f"image missing: no file for {csv_name} line {line}"})
            continue
        used.add(files[key])
        row = {str(c): _value(v, kinds[str(c)]) for c, v in rec.items()}
        row[id_col] = sid
        empty = next((c for c in label_cols if _missing(row.get(c))), None)
        if empty is not None:
            rejected.append({"id": sid, "file": files[key], "reason": f"no label: {csv_name} line {line} has an "
                             f"empty {empty!r}"})
            continue
        samples.append(Sample(sid, sample_key(key), files[key], row, None, _label(row, label_cols)))
    return samples


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _label(row: Dict[str, Any], label_cols: Sequence[str]) -> Any:
    """A sample's label: None (unlabeled), the one column's value, or the list of several columns' values in order."""
    if not label_cols:
        return None
    return row[label_cols[0]] if len(label_cols) == 1 else [row[c] for c in label_cols]


def _refuse_text_labels(path, df, label_cols: Sequence[str]) -> None:
    """KitError naming the first column of several label columns that holds text (each must be 0/1 or a number)."""
    if len(label_cols) < 2:
        return  # one text column is a class label
    import pandas as pd

    for col in label_cols:
        if col in df.columns and df[col].dtype.kind not in "iubf":
            text = (df[col].notna() & pd.to_numeric(df[col], errors="coerce").isna()).to_numpy()
            line = int(text.argmax() if text.any() else df[col].notna().to_numpy().argmax())
            raise KitError(f"{path}: label column {col!r} holds text ({df[col].iloc[line]!r} on line {line + 2}); "
                           f"with several label columns ({','.join(label_cols)}) each must hold numbers (0/1 per "
                           "label, or floats)")


def _chunks(samples: List[Sample], per_shard: int) -> List[List[Sample]]:
    """Split into near-equal shards of at most `per_shard` samples (1025 → 513 + 512, not 1024 + 1)."""
    if not samples:
        return []
    n_shards = -(-len(samples) // per_shard)
    bounds = np.linspace(0, len(samples), n_shards + 1).round().astype(int)
    return [samples[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _common_kinds(kinds: Dict[str, str], test_kinds: Dict[str, str]) -> None:
    """Give a column both CSVs share one type (int + float → float, else bytes): a shard set has one schema."""
    for col in set(kinds) & set(test_kinds):
        if kinds[col] != test_kinds[col]:
            kinds[col] = test_kinds[col] = FLOAT if {kinds[col], test_kinds[col]} == {INT64, FLOAT} else BYTES


def make_plan(files: List[tuple], csv, test_csv, ext: str, *, id_col: str, label_cols: Sequence[str],
              group_col: Optional[str], folds: Optional[int], fold_col: str, shard_samples: int, seed: int,
              image_key: Optional[str] = None) -> Plan:
    """Match CSV rows to files, assign folds and split every fold (and the test set) into shards.

    `label_cols`: none (unlabeled), one column (a class, or a float target) or several (each a number: 0/1 labels or
    floats; a sample's label is then the list of its values in this order). `image_key`: the feature that holds the
    JPEG bytes (TFRecord); a CSV column of that name is refused.
    """
    label_cols = list(label_cols)
    df = read_csv(csv, [id_col, *label_cols, group_col or ""], id_col)
    test_df = read_csv(test_csv, [id_col], id_col) if test_csv else None
    test_labels = label_cols if test_df is not None and set(label_cols) <= set(test_df.columns) else []
    _refuse_text_labels(csv, df, label_cols)
    _refuse_text_labels(test_csv, test_df, test_labels)
    for path, frame in ((csv, df), (test_csv, test_df)):
        if image_key and frame is not None and image_key in frame.columns:
            raise KitError(f"{path}: column {image_key!r} would overwrite the {image_key!r} feature that holds the "
                           "JPEG bytes; rename that column (and --id-col if it is the id), or use --format wds")
    by_id, dupes = index_by_id(files)
    rejected = [{"id": stem_of(rel), "file": rel, "reason": reason} for rel, reason in dupes]
    kinds = column_kinds(df)
    test_kinds = column_kinds(test_df) if test_df is not None else {}
    _common_kinds(kinds, test_kinds)
    has_folds = fold_col in df.columns
    if has_folds and kinds[fold_col] != INT64:
        raise KitError(f"{csv}: column {fold_col!r} must hold whole fold numbers 0…K-1 with no blanks")
    seen: Dict[str, str] = {}
    used: set = set()
    train = _rows(df, kinds, id_col, _name(csv), by_id, seen, rejected, used, label_cols)
    if not train:
        raise _nothing_to_convert(csv, df, id_col, rejected)
    test: List[Sample] = []
    schema = {IMAGE_KEY: BYTES, **kinds}
    if test_df is not None:
        test = _rows(test_df, test_kinds, id_col, _name(test_csv), by_id, seen, rejected, used, test_labels)
        schema.update({c: k for c, k in test_kinds.items() if c not in schema})
    if has_folds:
        num_folds = max((s.row[fold_col] for s in train), default=-1) + 1
        if any(s.row[fold_col] < 0 for s in train):
            raise KitError(f"{csv}: column {fold_col!r} has negative fold numbers")
        for s in train:
            s.fold = s.row[fold_col]
    elif folds and folds >= 2:
        num_folds = folds
        groups = [s.row[group_col] if group_col else s.id for s in train]
        labels = [s.label for s in train] if label_cols else None
        for s, k in zip(train, stratified_folds(groups, labels, folds, seed)):
            s.fold = k
            s.row[fold_col] = k
        schema[fold_col] = INT64
    else:
        num_folds = None
    duplicate_files = {rel for rel, _ in dupes}
    for rel, _ in files:
        if rel not in used and rel not in duplicate_files and rel.lower().endswith(IMAGE_SUFFIXES):
            rejected.append({"id": stem_of(rel), "file": rel, "reason": "not in the CSV"})
    shards: List[ShardPlan] = []
    rng = np.random.default_rng(seed)
    fold_values = sorted({s.fold for s in train}, key=lambda f: -1 if f is None else f)
    for fold in fold_values:
        members = [s for s in train if s.fold == fold]
        members = [members[i] for i in rng.permutation(len(members))]  # mixed classes/patients within each shard
        stem = "train" if fold is None else f"train-f{fold}"
        for j, chunk in enumerate(_chunks(members, shard_samples)):
            shards.append(ShardPlan(f"{stem}-{j:05d}{ext}", "train", fold, chunk))
    for j, chunk in enumerate(_chunks(test, shard_samples)):  # test keeps CSV order: submissions follow it
        shards.append(ShardPlan(f"test-{j:05d}{ext}", "test", None, chunk))
    return Plan(shards, schema, num_folds, rejected, _classes([s.label for s in train], label_cols))


def _classes(labels: List[Any], label_cols: Sequence[str]) -> List[Any]:
    """The distinct labels in sorted text order when they are classes (one column, no fractional float), else []."""
    if len(label_cols) != 1 or any(is_fractional(v) for v in labels):
        return []
    return sorted({v for v in labels if v is not None}, key=str)


def _name(path) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]
