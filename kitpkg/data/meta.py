"""Patient metadata as model input (`model.meta`): per-sample manifest columns encoded as a fixed-width float vector.

`MetaEncoder` is fitted on the training folds only (a text column becomes a one-hot over the values seen there, a
number is standardised with their mean and std) and every column gets a missing flag, so a value absent or unseen at
fit time is still a valid input. Its state is plain JSON data (`state_dict` / `from_state`) for the run directory:
nothing is ever unpickled. The loader workers apply it per sample: batch["meta"] is a B×`width` float tensor.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

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
        """Fit the encoding of columns `names` on `rows` (the training samples' fields only)."""
        seen: Dict[str, List[Any]] = {n: [] for n in names}
        for row in rows:
            for n in names:
                if not _missing(row.get(n)):
                    seen[n].append(row.get(n))
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
                out += [0.0, 1.0] if x is None else [(x - c["mean"]) / c["std"], 0.0]
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
