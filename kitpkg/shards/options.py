"""ConvertOptions: every option of `kitpkg convert` and the one home of its defaults.

The CLI builds it from argparse (whose defaults are read from here), `kitpkg.convert(source, csv, out, **overrides)`
builds it from keywords, `kitpkg index` and the manifest read their defaults from it. Adding a convert option is one
field here (plus its `--flag` in cli.py, and its use in convert.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ..errors import KitError
from .formats import DEFAULT_FORMAT, FORMATS

ASPECTS = ("crop", "pad", "squash")  # how an image becomes N×N (see convert's docstring and imaging.py)
# options that decide every output byte: a re-run with other values is refused unless `overwrite` (resume.py)
_STATE_KEYS = ("fmt", "aspect", "quality", "shard_samples", "seed", "id_col", "label_col", "group_col", "folds",
               "fold_col")
_MANIFEST_KEYS = ("quality", "shard_samples", "seed", "folds", "fold_col")  # recorded in the manifest's `options`


@dataclass(frozen=True)
class ConvertOptions:
    """How `convert` turns images + CSV into shards; checked (KitError naming the option) when made."""

    fmt: str = DEFAULT_FORMAT  # a key of formats.FORMATS
    sizes: Tuple[int, ...] = (384,)  # output image sides in px; several are made from one decode
    aspect: str = "crop"  # one of ASPECTS
    quality: int = 90  # JPEG quality of the re-encoded images
    id_col: str = "image_name"  # CSV column naming each image file (with or without .jpg)
    # one CSV label column, or several as "a,b,c" (or a list): 0/1 labels (multilabel) or floats (regression, soft
    # labels); None (or ''): unlabeled data
    label_col: Union[None, str, Sequence[str]] = "target"
    group_col: Optional[str] = "patient_id"  # images with one value stay in one fold; None (or ''): fold by image
    folds: Optional[int] = 5  # stratified, grouped folds; 0/None: no folds
    fold_col: str = "fold"  # a CSV column of this name assigns the folds as given; else the fold is stored under it
    test_csv: Optional[Any] = None  # test CSV (path), written as test shards
    shard_samples: int = 1024  # at most this many images per shard
    workers: Optional[int] = None  # decoding processes; None: every core
    seed: int = 42  # seed of the fold assignment and the order within folds
    progress: bool = True  # a progress bar (also off with KITPKG_NO_PROGRESS=1)
    overwrite: bool = False  # replace shards in OUT made from other inputs or options (otherwise refused)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise KitError(f"--format must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if self.aspect not in ASPECTS:
            raise KitError(f"--aspect must be one of {', '.join(ASPECTS)}, not {self.aspect!r}")
        if not 1 <= int(self.quality) <= 100:
            raise KitError(f"--quality must be 1…100, not {self.quality}")
        if int(self.shard_samples) < 1:
            raise KitError(f"--shard-samples must be ≥ 1, not {self.shard_samples}")
        sizes = [int(s) for s in self.sizes]
        if not sizes or any(s < 8 for s in sizes) or len(set(sizes)) != len(sizes):
            raise KitError(f"--size needs distinct image sides ≥ 8 px, not {sizes}")
        normal = {"sizes": tuple(sizes), "quality": int(self.quality), "shard_samples": int(self.shard_samples),
                  "label_col": joined_label_cols(self.label_col), "group_col": self.group_col or None}
        for name, value in normal.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @classmethod
    def of(cls, options: Optional["ConvertOptions"] = None, **overrides: Any) -> "ConvertOptions":
        """`options` (default: the defaults) with `overrides` (field=value) applied; TypeError on an unknown name."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"convert() got unknown option(s) {', '.join(unknown)}; known: "
                            f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        return dataclasses.replace(options or cls(), **overrides)

    @property
    def label_cols(self) -> Tuple[str, ...]:
        """The label columns in order: () when unlabeled, one name, or several (from "a,b,c")."""
        return tuple(split_label_cols(self.label_col))

    def state(self) -> Dict[str, Any]:
        """The options that decide every output byte, as the resume state records them (key `format` for `fmt`)."""
        return {("format" if k == "fmt" else k): getattr(self, k) for k in _STATE_KEYS}

    def manifest_options(self) -> Dict[str, Any]:
        """The options a manifest records under `options` (besides the input hashes)."""
        return {k: getattr(self, k) for k in _MANIFEST_KEYS}


def split_label_cols(value: Union[None, str, Sequence[str]]) -> list:
    """Label column names from `--label-col` ("a,b,c", one name, a list, or None/'' for none); KitError for an empty or
    repeated name. A name is never split unless it holds a comma, so one column is exactly as given."""
    if not value:
        return []
    names = [str(n).strip() for n in value.split(",")] if isinstance(value, str) and "," in value else \
        [value] if isinstance(value, str) else [str(n).strip() for n in value]
    if names == [""]:
        return []
    if len(names) > 1 and (not all(names) or len(set(names)) != len(names)):
        raise KitError(f"--label-col {','.join(names)!r}: give distinct, non-empty column names separated by commas")
    return names


def joined_label_cols(value: Union[None, str, Sequence[str]]) -> Optional[str]:
    """`--label-col` as one text (what the resume state records): None, the one name as given, or "a,b,c"."""
    names = split_label_cols(value)
    return ",".join(names) if names else None
