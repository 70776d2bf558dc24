"""Labels -> targets: what a batch's "target" holds for the label columns of a shard set.

One label column (`Manifest.label_col`): a class index (text labels by their place in the task's classes, integers
as stored) or a float, so a batch's target is B int64 or B float32. Several (`Manifest.label_cols`, K of them): the
K values as floats in column order, a batch's target float32 B×K. A sample without labels (the test split) gives -1,
or a K-vector of -1.0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import KitError
from ..shards.formats import shard_format
from ..shards.manifest import Manifest
from ..shards.reader import Record


def refuse_class_weights(manifest: Manifest) -> None:
    """KitError unless the labels are one column of classes: only then does "repeat the samples of a class" mean
    anything (a float target has no classes; several label columns give a sample several)."""
    cols = manifest.label_columns()
    if cols and manifest.class_column() is None:
        what = f"the label columns {', '.join(cols)}" if len(cols) > 1 else f"the float label column {cols[0]!r}"
        raise KitError(f"data.sampling.class_weights needs one label column of classes, but {manifest.root} has "
                       f"{what}; remove data.sampling.class_weights")


@dataclass(frozen=True)
class LabelTargets:
    """How one shard set's labels become a target: one column's number as stored, or its text label's index in
    `classes`; several columns (`cols`) a list of floats in column order."""

    cols: Tuple[str, ...]  # () unlabeled, one label column, or several
    kind: str  # "int64" or "float" (always "float" for several columns)
    classes: Dict[str, int]
    root: str
    member: Optional[str] = None  # the format's own label member, read when the row lacks the column (a tar's .cls)

    @property
    def col(self) -> Optional[str]:
        """The one label column (None: unlabeled or several)."""
        return self.cols[0] if len(self.cols) == 1 else None

    @classmethod
    def of(cls, manifest: Manifest, main: Manifest) -> "LabelTargets":
        """The label columns of `manifest`; text labels are indexed by `main`'s classes (the task's)."""
        cols = tuple(manifest.label_columns())
        if main is not manifest and (len(cols) > 1 or len(main.label_columns()) > 1) \
                and cols != tuple(main.label_columns()):
            raise KitError(f"{manifest.root}: label columns {', '.join(cols) or 'none'} differ from those of "
                           f"{main.root} ({', '.join(main.label_columns())}); extra training sets need the same ones")
        if len(cols) > 1:
            return cls(cols, "float", {}, manifest.root)
        kind = manifest.schema.get(manifest.label_col or "", "int64")
        own = manifest.classes()
        names = (main.classes() or own) if own is not None else []
        return cls(cols, "float" if str(kind).startswith("float") else "int64",
                   {name: i for i, name in enumerate(names)}, manifest.root,
                   shard_format(manifest.format).label_member)

    def target(self, record: Record, training: bool) -> Any:
        """The record's target; -1 when it has none (test data); a text label that is no class fails in training.
        Several columns: the list of their values as floats, -1.0 for each the record lacks (test data)."""
        if len(self.cols) > 1:
            return [self._number(record, c) for c in self.cols]
        value = record.fields.get(self.col, record.fields.get(self.member)) if self.col else None
        if isinstance(value, str) and self.classes:
            if value in self.classes:
                return self.classes[value]
            if training:
                raise KitError(f"{self.root}: sample {record.id!r} has the label {value!r}, which is not one of the "
                               f"classes {list(self.classes)}; fix the label and re-run `kitpkg convert`")
        return -1 if value is None or isinstance(value, (list, str)) else value

    def _number(self, record: Record, col: str) -> float:
        """One of several label columns' values as a float (-1.0 when missing); KitError naming it when not a number."""
        value = record.fields.get(col)
        if value is None or value == []:
            return -1.0
        if isinstance(value, (int, float)):
            return float(value)
        raise KitError(f"{self.root}: sample {record.id!r} has {value!r:.40} in label column {col!r}, not a number; "
                       "several label columns must each hold numbers (re-run `kitpkg convert` or `kitpkg index`)")


def collate_targets(labelled: Sequence[Tuple[LabelTargets, Record]], training: bool) -> torch.Tensor:
    """One target per (labels, record): B int64 class indices or B float32 (one column), float32 B×K (K columns)."""
    values: List[Any] = [labels.target(record, training) for labels, record in labelled]
    floats = any(labels.kind == "float" for labels, _ in labelled)
    return torch.tensor(values, dtype=torch.float32 if floats else torch.int64)
