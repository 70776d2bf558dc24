"""Patient metadata as model input (`model.meta`): per-sample manifest columns encoded as a fixed-width float vector.

`MetaEncoder` is fitted on the training folds only (a text column becomes a one-hot over the values seen there, a
number is standardised with their mean and std) and every column gets a missing flag, so a value absent or unseen at
fit time is still a valid input. A number that is not finite (inf: e.g. a log of 0 upstream) is refused at fit
time, naming the column: it is a bug in the CSV, and standardising with an infinite mean would make every sample's
input NaN; at transform time (test rows the fit never saw) it counts as missing, like an unseen category. Its state is plain JSON data (`state_dict` / `from_state`) for the run directory:
nothing is ever unpickled. The loader workers apply it per sample: batch["meta"] is a B×`width` float tensor.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import KitError

_MISSING_TEXT = ("", "nan", "none", "null", "unknown", "na", "n/a")


def _missing(value: Any) -> bool:
    if value is None or isinstance(value, (list, tuple)) and not value:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in _MISSING_TEXT


def _number(value: Any) -> Optional[float]:
    """`value` as a float, or None when it is no number (text that does not parse, bytes)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


class MetaEncoder:
    """Columns -> floats: one-hot + missing flag for text, (x - mean) / std + missing flag for numbers."""

    def __init__(self, columns: Sequence[Dict[str, Any]]):
        self.columns = [dict(c) for c in columns]

    @property
    def names(self) -> List[str]:
        """The encoded columns, in order."""
        return [c["name"] for c in self.columns]

    @property
    def width(self) -> int:
        """Floats per sample (the model's meta input size)."""
        return sum(len(c["values"]) + 1 if c["kind"] == "category" else 2 for c in self.columns)

    @classmethod
    def fit(cls, names: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> "MetaEncoder":
        """Fit the encoding of columns `names` on `rows` (the training samples' fields only); KitError for a column
        holding non-finite numbers (inf)."""
        seen: Dict[str, List[Any]] = {n: [] for n in names}
        for row in rows:
            for n in names:
                if not _missing(row.get(n)):
                    seen[n].append(row.get(n))
        for n in names:
            _check_finite(n, seen[n])
        return cls([_fit_column(n, seen[n]) for n in names])

    def transform(self, row: Mapping[str, Any]) -> List[float]:
        """The encoded floats of one sample's fields (`width` of them)."""
        out: List[float] = []
        for c in self.columns:
            value = row.get(c["name"])
            if c["kind"] == "category":
                hot = [0.0] * len(c["values"])
                key = None if _missing(value) else str(value)
                if key in c["values"]:
                    hot[c["values"].index(key)] = 1.0
                out += hot + [0.0 if 1.0 in hot else 1.0]
            else:
                x = None if _missing(value) else _number(value)
                finite = x is not None and math.isfinite(x)  # inf in a row the fit never saw: missing, not NaN input
                out += [(x - c["mean"]) / c["std"], 0.0] if finite else [0.0, 1.0]
        return out

    def state_dict(self) -> Dict[str, Any]:
        """The fitted encoding as plain JSON data."""
        return {"columns": [dict(c) for c in self.columns]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "MetaEncoder":
        """An encoder from `state_dict()` output (e.g. read back from the run directory's JSON)."""
        try:
            columns = list(state["columns"])
            for c in columns:
                if c["kind"] not in ("category", "number") or not isinstance(c["name"], str):
                    raise ValueError(c)
        except (KeyError, TypeError, ValueError) as err:
            raise KitError(f"meta encoder state is not one MetaEncoder.state_dict() wrote ({err!r})") from None
        return cls(columns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetaEncoder) and self.columns == other.columns

    def __repr__(self) -> str:
        return f"MetaEncoder({self.names}, width={self.width})"


def _check_finite(name: str, values: List[Any]) -> None:
    """KitError naming a number column `name` and how many of its training values are not finite (text columns are
    categories: "inf" there is one more label)."""
    numbers = [_number(v) for v in values]
    bad = sum(1 for x in numbers if x is not None and not math.isfinite(x))
    if bad and all(x is not None for x in numbers):
        raise KitError(f"model.meta column {name!r}: {bad} training sample(s) hold a non-finite number (inf); fix "
                       f"them in the CSV (leave the cell empty for missing) and re-run `kitpkg convert`, or drop "
                       f"{name!r} from model.meta")


def _fit_column(name: str, values: List[Any]) -> Dict[str, Any]:
    numbers = [_number(v) for v in values]
    if values and all(x is not None for x in numbers):
        mean = sum(numbers) / len(numbers)
        std = math.sqrt(sum((x - mean) ** 2 for x in numbers) / len(numbers))
        return {"name": name, "kind": "number", "mean": mean, "std": std if std > 0 else 1.0}
    return {"name": name, "kind": "category", "values": sorted({str(v) for v in values})}


def check_meta_columns(names: Sequence[str], schema: Mapping[str, str], where: str) -> None:
    """Refuse a shard set whose schema lacks one of `names` (KitError naming the column and the shard set)."""
    for n in names:
        if n not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise KitError(f"{where}: model.meta column {n!r} is not in the shards (columns: {known}); add it to the "
                           "CSV and re-run `kitpkg convert`, or drop it from model.meta")


def check_meta_inputs(names: Sequence[str], manifest: Any, cache_dir: Optional[str] = None) -> None:
    """Refuse `model.meta` columns that leak the answer or are absent at test time, before a run starts: the label,
    fold, id and group columns, a column not in the shards, one with no value in the test split, and one whose values
    determine the label exactly on the training samples (a relabelling of it, e.g. benign_malignant vs target).
    KitError: one line naming the column and why.

    Reads sample fields from the shards, stopping as soon as each column is decided: a usable column costs a few
    records; the training split is read whole only for a column that never shows one value with two labels (a
    relabelling, refused; or nearly unique values such as a file size)."""
    if not names:
        return
    labels = manifest.label_columns()
    label_role = "the label column" if len(labels) == 1 else f"a label column (one of {len(labels)})"
    roles = {**{col: f"{label_role} (the answer itself)" for col in labels},
             manifest.options.get("fold_col", "fold"): "the fold column (which fold validates a sample, no property "
                                                       "of it)",
             manifest.id_col: "the id column (unique per sample: nothing to learn, a lookup of the answer)",
             manifest.group_col: "the group column (e.g. patient id: identifies groups, which never share a fold)"}
    for n in names:
        if n in roles and n:
            raise KitError(f"model.meta column {n!r} is {roles[n]}; drop it from model.meta")
    check_meta_columns(names, manifest.schema, manifest.root)
    _check_test_values(names, manifest, cache_dir)
    _check_relabelling(names, manifest, cache_dir)


def _rows(manifest: Any, split: str, columns: Sequence[str], cache_dir: Optional[str]) -> Iterable[Dict[str, Any]]:
    from .dataset import ShardDataset

    folds = None if split == "test" else manifest.folds()
    if split == "train" and not folds:
        return iter(())
    return ShardDataset(manifest, split, folds=folds, cache_dir=cache_dir, world_size=1, rank=0).rows(columns)


def _check_test_values(names: Sequence[str], manifest: Any, cache_dir: Optional[str]) -> None:
    tests = manifest.num_samples("test")
    if not tests:
        return
    for n in columns_without_values(names, _rows(manifest, "test", names, cache_dir)):
        raise KitError(f"model.meta column {n!r} has no value in the test split of {manifest.root} ({tests} samples): "
                       f"the model would lean on it in training and never see it for the submission; drop it from "
                       f"model.meta")


def _check_relabelling(names: Sequence[str], manifest: Any, cache_dir: Optional[str]) -> None:
    for label in manifest.label_columns():  # each of several label columns (multilabel: one 0/1 column each) too
        _check_relabels(names, label, manifest, cache_dir)


def _check_relabels(names: Sequence[str], label: str, manifest: Any, cache_dir: Optional[str]) -> None:
    for n, (values, samples) in relabellings(names, label, _rows(manifest, "train", [*names, label], cache_dir)).items():
        raise KitError(f"model.meta column {n!r} is a relabelling of the label {label!r}: its {values} values "
                       f"determine {label!r} exactly on the {samples} training samples (a leak: near-perfect CV, a "
                       f"useless submission); drop it from model.meta")


def columns_without_values(names: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> List[str]:
    """The columns of `names` that no row has a value of (reading stops once every column has shown one)."""
    unseen = set(names)
    for row in rows:
        unseen -= {n for n in unseen if not _missing(row.get(n))}
        if not unseen:
            break
    return [n for n in names if n in unseen]


def relabellings(names: Sequence[str], label: str, rows: Iterable[Mapping[str, Any]]) -> Dict[str, Tuple[int, int]]:
    """{column: (distinct values, samples)} of the columns whose values determine `label` on every row holding both
    (each value seen with one label only) -- unless the values are nearly all distinct (under two samples a value on
    average: a measurement such as a file size, no relabelling). Reading stops once every column has shown one value
    with two labels."""
    first: Dict[str, Dict[str, str]] = {n: {} for n in names}  # column -> {value: the one label seen with it}
    counts = {n: 0 for n in names}
    labels = set()
    for row in rows:
        if _missing(row.get(label)):
            continue
        target = str(row.get(label))
        labels.add(target)
        for n in list(first):
            if not _missing(row.get(n)):
                counts[n] += 1
                if first[n].setdefault(str(row.get(n)), target) != target:
                    del first[n]  # one value, two labels
        if not first:
            break
    return {n: (len(seen), counts[n]) for n, seen in first.items()
            if len(labels) > 1 and 2 * len(seen) <= counts[n]}


def write_meta_encoder(path: "os.PathLike[str] | str", encoder: MetaEncoder) -> None:
    """Store a fitted encoder in the run directory as JSON (complete or not at all)."""
    from ..fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(encoder.state_dict(), indent=1) + "\n")


def read_meta_encoder(path: "os.PathLike[str] | str") -> MetaEncoder:
    """An encoder `write_meta_encoder` stored; a file that is not one is a KitError naming it."""
    try:
        with open(path) as f:
            return MetaEncoder.from_state(json.load(f))
    except (OSError, ValueError) as err:
        raise KitError(f"{path}: cannot read the meta encoder ({err})") from None
    except KitError as err:
        raise KitError(f"{path}: {err}") from None
