"""What a setting declares beside its default, in its dataclass field's metadata: its doc and its accepted range.

`keyed(default, doc="...")` makes a documented field; `ranged(default, ge=0, lt=1, doc="...")` one whose numbers must
also lie in a `Range`. `doc_of(field)` is the one doc of a config key: `kitpkg init` writes it as the key's comment and
`kitpkg.starter.key_table()` into the README's table. `out_of_range(obj)` walks a (nested) dataclass and returns the
first field holding a number outside its range -- NaN and inf are outside every range. A list's items and a mapping's
values are checked one by one (`data.folds`, `data.sampling.class_weights`, a GPU op's [low, high] pair); None (a
switched-off optional setting) is not a number and passes. The config (kitpkg/config.py) and the GPU augmentation ops
(kitpkg/augment/gpu.py) declare their ranges this way, so the accepted range of every numeric key is written in one
place, next to its default, and the error message quotes it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

RANGE = "range"  # the metadata key a ranged field keeps its Range under
DOC = "doc"  # the metadata key a field keeps its one-line doc under


@dataclass(frozen=True)
class Range:
    """Bounds of a number (None: unbounded), pydantic-style: ge/gt/le/lt; NaN and inf are never in a range."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None

    def __contains__(self, value: float) -> bool:
        return (math.isfinite(value) and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        if hi:
            return f"{'<=' if self.le is not None else '<'} {hi[:-1]}"
        return "any"

    def describe(self, value: Any) -> str:
        """What a value must be: '> 0', 'in [0, 1)'; a float with an open-ended range: '>= 0 and finite'."""
        bounded = (self.ge, self.gt) != (None, None) and (self.le, self.lt) != (None, None)
        return f"{self} and finite" if isinstance(value, float) and not bounded else str(self)


def keyed(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, doc: str = "",
          rng: Optional[Range] = None) -> Any:
    """A dataclass field with its one-line doc (and, given `rng`, its accepted range) beside its default."""
    metadata = {DOC: doc} if rng is None else {DOC: doc, RANGE: rng}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
           lt: Optional[float] = None, doc: str = "") -> Any:
    """A documented dataclass field whose numbers must lie in the range ge/gt/le/lt (and be finite)."""
    return keyed(default, default_factory=default_factory, doc=doc, rng=Range(ge=ge, gt=gt, le=le, lt=lt))


def range_of(f: dataclasses.Field) -> Optional[Range]:
    """The Range a field declares, or None."""
    return f.metadata.get(RANGE)


def doc_of(f: dataclasses.Field) -> str:
    """The one-line doc a field declares ('' if none)."""
    return f.metadata.get(DOC, "")


def numbers(value: Any) -> Iterator[Tuple[str, Any]]:
    """(path suffix, number) of each number a setting holds: itself (''), a list's or tuple's items ('[i]'), a
    mapping's values ('.key'); bools are no numbers."""
    if isinstance(value, dict):
        items = ((f".{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        items = iter([("", value)])
    return ((at, v) for at, v in items if isinstance(v, (int, float)) and not isinstance(v, bool))


def out_of_range(obj: Any, prefix: str = "") -> Optional[Tuple[str, Any, Range]]:
    """(path, number, its Range) of the first number of `obj` outside its declared range, or None; the path is
    dotted through nested dataclasses and names the item: `data.folds[1]`, `data.sampling.class_weights.1`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        rng = range_of(f)
        for at, number in numbers(value) if rng is not None else ():
            if number not in rng:
                return prefix + f.name + at, number, rng
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found = out_of_range(value, f"{prefix}{f.name}.")
            if found:
                return found
    return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)
