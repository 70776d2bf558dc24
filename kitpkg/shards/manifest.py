"""The manifest: what a shard set holds (schema, shards with counts/bytes/sha256/offsets/ids, folds, rejects).

Labels: one label column is `label_col` (its classes: `classes()`, its counts per label: `class_counts`); several
(`--label-col a,b,c`) are `label_cols` in order, `label_col` then None, and a shard's `labels` hold one list of values
per sample. Each column's type is the schema's. `label_columns()` reads both (and manifests written before
`label_cols` existed, which never hold that key: a manifest with one label column is written as it always was).
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .. import fsutil
from .._version import __version__
from ..errors import KitError
from .folds import is_fractional
from .formats import FORMATS, IMAGE_KEY
from .options import ConvertOptions

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
# Of two text classes the second in sorted order is the positive one, unless it is one of these (then the first is):
# {benign, malignant} → malignant, {no, yes} → yes, {False, True} → True, {abnormal, normal} → abnormal
NEGATIVE_NAMES = frozenset({"0", "f", "false", "n", "no", "neg", "negative", "benign", "normal", "healthy", "absent",
                            "none"})


TRAIN_ONLY_FOLD = -1  # the fold of shards that only ever train (e.g. `kitpkg pseudo`'s): no fold validates on them


@dataclass
class ShardInfo:
    """One shard file: where it is (relative to the manifest), which split/fold, and how to check and seek it."""

    file: str
    split: str  # "train" or "test"
    fold: Optional[int]  # None: test split; TRAIN_ONLY_FOLD: training-only data (pseudo-labels), never validated on
    samples: int
    bytes: int
    sha256: str
    offsets: List[int]  # byte offset of every sample (record start or first tar member header)
    ids: List[str]
    labels: Optional[List[Any]] = None  # train shards: each sample's label (a list of values: several label columns)
    # CRC-32C of each sample's bytes, from its offset to the next sample's (the last: to the end of the file), so
    # `verify` can name the damaged sample even in tars, whose member data carry no checksum; None when compressed
    checksums: Optional[List[int]] = None


@dataclass
class Manifest:
    """A shard set; `root` (not stored) is the folder or URL prefix the shard files live under."""

    format: str
    schema: Dict[str, str]
    shards: List[ShardInfo]
    id_col: str = ConvertOptions.id_col
    label_col: Optional[str] = None  # the one label column (None: unlabeled, or several label columns)
    label_cols: Optional[List[str]] = None  # several label columns in order (None: one or none; not written then)
    group_col: Optional[str] = None
    image_key: str = IMAGE_KEY
    compression: Optional[str] = None
    image_size: Optional[int] = None
    aspect: Optional[str] = None
    num_folds: Optional[int] = None
    # one label column of classes: {label as text: samples}; several 0/1 columns: {column: positives}; None: labels
    # that are no classes (a float target, several numeric columns)
    class_counts: Optional[Dict[str, int]] = field(default_factory=dict)
    source_csv_sha256: Optional[str] = None
    rejected: List[Dict[str, str]] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    kitpkg_version: str = __version__
    root: str = field(default="", compare=False)

    def path(self, shard: ShardInfo) -> str:
        """Full path or URL of a shard file."""
        return fsutil.join(self.root, shard.file)

    def select(self, split: str = "train", folds: Optional[Sequence[int]] = None) -> List[ShardInfo]:
        """Shards of one split, optionally only those whose fold is in `folds`."""
        chosen = [s for s in self.shards if s.split == split]
        if folds is not None:
            wanted = set(int(k) for k in folds)
            chosen = [s for s in chosen if s.fold in wanted]
        return chosen

    def folds(self) -> List[int]:
        """The sorted fold numbers present in the train split."""
        return sorted({s.fold for s in self.shards if s.split == "train" and s.fold is not None})

    def fold_of(self) -> Dict[str, int]:
        """{sample id: fold} for every train sample."""
        return {i: s.fold for s in self.select("train") for i in s.ids if s.fold is not None}

    def label_columns(self) -> List[str]:
        """The label columns in order: [] (unlabeled), [label_col], or the several of `label_cols`."""
        return list(self.label_cols) if self.label_cols else [self.label_col] if self.label_col else []

    def class_column(self) -> Optional[str]:
        """The label column when the labels are one column of classes (text, integers, whole floats), else None
        (unlabeled, a fractional float target, several label columns): what class counts and weights need."""
        cols = self.label_columns()
        return cols[0] if len(cols) == 1 and self.class_counts is not None else None

    def classes(self) -> Optional[List[str]]:
        """Text labels in target order (a sample's target is its label's index), or None when labels are numbers.

        The classes are the label column's sorted names; of two (a binary task) the positive one, target 1, comes
        second: the second in sorted order unless that one is a negative name (NEGATIVE_NAMES).
        """
        if not self.label_col or self.schema.get(self.label_col) != "bytes":
            return None
        names = sorted(str(c) for c in self.options.get("classes") or self.class_counts)
        if len(names) == 2 and names[1].strip().lower() in NEGATIVE_NAMES:
            names.reverse()
        return names

    def num_samples(self, split: str = "train") -> int:
        """Total samples in a split."""
        return sum(s.samples for s in self.select(split))

    def to_json(self) -> str:
        """The manifest as JSON text (without `root`)."""
        data = dataclasses.asdict(self)
        data.pop("root")
        if data["label_cols"] is None:
            data.pop("label_cols")  # one label column: written exactly as before `label_cols` existed
        return json.dumps(data, indent=1, sort_keys=False)

    def save(self, folder: str) -> str:
        """Write `manifest.json` into `folder` atomically; return its path."""
        path = os.path.join(folder, MANIFEST_NAME)
        fsutil.atomic_write_text(path, self.to_json())
        return path


def label_counts(shards: Sequence[ShardInfo]) -> Dict[str, int]:
    """{label as text: samples} over the shards that record labels, sorted by label text (the manifest's
    `class_counts`)."""
    counts: Dict[str, int] = {}
    for shard in shards:
        for label in shard.labels or ():
            counts[str(label)] = counts.get(str(label), 0) + 1
    return dict(sorted(counts.items()))


def class_counts(shards: Sequence[ShardInfo], label_cols: Sequence[str]) -> Optional[Dict[str, int]]:
    """The manifest's `class_counts` for labels of `label_cols`: label_counts when one column holds classes (not a
    fractional float), {column: positives} in column order when several columns are all 0/1, else None."""
    labels = [v for shard in shards for v in shard.labels or ()]
    if len(label_cols) <= 1:
        return None if any(is_fractional(v) for v in labels) else label_counts(shards)
    if not all(v in (0, 1) for row in labels for v in row):
        return None
    return {col: int(sum(row[i] for row in labels)) for i, col in enumerate(label_cols)}


def load_manifest(path: str) -> Manifest:
    """Read a manifest from a folder, a manifest.json path or a URL; `root` is set to its folder.

    Anything that is not a manifest this kitpkg wrote (cut short, hand-edited: a key missing, unknown or of the wrong
    type, counts that disagree) raises KitError naming the file and the key.
    """
    path = str(path)
    if not fsutil.is_url(path) and os.path.isfile(path) and not path.endswith(".json"):
        raise KitError(f"{path}: a file, not a shard folder; give the folder that holds {MANIFEST_NAME}")
    if not path.endswith(".json"):
        path = fsutil.join(path, MANIFEST_NAME)
    try:
        with fsutil.open_binary(path) as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no manifest here; run `kitpkg convert` or `kitpkg index` first") from None
    except OSError as err:
        raise KitError(f"{path}: cannot read the manifest ({err.strerror or err})") from None
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8 text
        raise KitError(f"{path}: not a valid manifest, cut short or damaged ({err}); {_REWRITE}") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: not a valid manifest (a JSON {type(data).__name__}, not an object); {_REWRITE}")
    version = data.get("format_version", 0)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise KitError(f"{path}: manifest format {version} is newer than this kitpkg; upgrade kitpkg")
    manifest = Manifest(**_checked(data, Manifest, path, "manifest"))
    wheres = [f"shards[{i}]" + (f" ({s['file']})" if isinstance(s, dict) and isinstance(s.get("file"), str) else "")
              for i, s in enumerate(data["shards"])]
    manifest.shards = [ShardInfo(**_checked(s, ShardInfo, path, w)) for s, w in zip(data["shards"], wheres)]
    for shard, where in zip(manifest.shards, wheres):
        _check_shard(shard, path, where)
    if manifest.format not in FORMATS:
        raise KitError(f"{path}: manifest key 'format' is {manifest.format!r}, expected one of {', '.join(FORMATS)}; "
                       f"{_REWRITE}")
    manifest.root = path.rsplit("/", 1)[0] if fsutil.is_url(path) else os.path.dirname(os.path.abspath(path))
    return manifest


_REWRITE = "restore it, or re-run the command that wrote it (`kitpkg convert` resumes, `kitpkg index` rescans)"


def _checked(data: Any, cls: type, path: str, where: str) -> Dict[str, Any]:
    """`data` as keyword arguments of dataclass `cls`: every required key present, none unknown, each of its type."""
    if not isinstance(data, dict):
        raise KitError(f"{path}: {where} must be a JSON object, not {type(data).__name__}; {_REWRITE}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "root"}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise KitError(f"{path}: {where} has an unknown key {key!r} (a typo? known: {', '.join(fields)}); "
                           f"{_REWRITE}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                raise KitError(f"{path}: {where} lacks the key {name!r}; {_REWRITE}")
            continue
        if not _is_a(data[name], hints[name]):
            raise KitError(f"{path}: {where} key {name!r} must be {_kind(hints[name])}, not {data[name]!r:.60}; "
                           f"{_REWRITE}")
    return dict(data)


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (Optional/List/Dict/Any and the plain types; an int is not a bool)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is typing.Union:
        return any(_is_a(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin in (list, dict):
        if not isinstance(value, origin):
            return False
        if origin is list:
            if args and args[0] in (int, str):  # ids, offsets, checksums: tens of thousands, checked fast
                return all(type(v) is args[0] for v in value)  # JSON gives plain ints (type(True) is bool)
            return not args or args[0] is Any or all(_is_a(v, args[0]) for v in value)
        return all(_is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items()) if args else True
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)  # its own keys are checked on their own (see load_manifest)
    return isinstance(value, hint)


def _kind(hint: Any) -> str:
    """A type hint in the words of JSON (`Optional[int]` → 'an integer or null')."""
    names = {int: "an integer", str: "a string", type(None): "null", bool: "true/false"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return " or ".join(_kind(a) for a in args)
    if origin is list:
        return f"a list of {_kind(args[0])[2:]}s" if args and args[0] in names else "a list"
    if origin is dict:
        return "an object"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _check_shard(shard: ShardInfo, path: str, where: str) -> None:
    """Counts and values that must agree within one shard entry (what a reader relies on to seek)."""
    if shard.split not in SPLITS:
        raise KitError(f"{path}: {where} key 'split' is {shard.split!r}, expected one of {', '.join(SPLITS)}; "
                       f"{_REWRITE}")
    if shard.fold is not None and shard.fold < TRAIN_ONLY_FOLD:
        raise KitError(f"{path}: {where} key 'fold' is {shard.fold}, expected a fold number ≥ 0 (or "
                       f"{TRAIN_ONLY_FOLD}: training only); {_REWRITE}")
    for key in ("offsets", "ids", "labels", "checksums"):
        values = getattr(shard, key)
        if values is not None and len(values) != shard.samples:
            raise KitError(f"{path}: {where} key 'samples' says {shard.samples} but {key!r} lists {len(values)}; "
                           f"{_REWRITE}")
    if shard.samples < 0 or shard.bytes < 0 or min(shard.offsets, default=0) < 0:
        raise KitError(f"{path}: {where} has a negative size, count or offset; {_REWRITE}")


def manifest_paths(path: str) -> List[str]:
    """The shard sets under `path`: itself when it holds a manifest (or is a file or URL), else its `<size>/`
    subfolders that do (what `kitpkg convert` writes), else itself (loading it then says what is missing)."""
    path = str(path)
    if fsutil.is_url(path) or not os.path.isdir(path) or os.path.exists(os.path.join(path, MANIFEST_NAME)):
        return [path]
    subs = sorted((d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, MANIFEST_NAME))),
                  key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))
    return [os.path.join(path, d) for d in subs] or [path]


def resolve_manifest_path(shards: str, image_size: int) -> str:
    """The manifest for `image_size` under `shards`: OUT/<size>/manifest.json, else OUT/manifest.json (or a .json)."""
    if shards.endswith(".json"):
        return shards
    sized = fsutil.join(fsutil.join(shards, str(image_size)), MANIFEST_NAME)
    flat = fsutil.join(shards, MANIFEST_NAME)
    if fsutil.is_url(shards):
        return sized  # remote: the sized layout convert writes
    if os.path.exists(sized):
        return sized
    if os.path.exists(flat):
        return flat
    sizes = [os.path.basename(p) for p in manifest_paths(shards) if p != shards]  # the <size>/ folders there
    hint = f"; sizes there: {', '.join(sizes)}" if sizes else "; run `kitpkg convert ... --size N` first"
    raise KitError(f"data.shards: no manifest for image_size {image_size} at {sized} or {flat}{hint}")
