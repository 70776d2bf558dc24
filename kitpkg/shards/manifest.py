"""The manifest: what a shard set holds (schema, shards with counts/bytes/sha256/offsets/ids, folds, rejects)."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .. import fsutil
from .._version import __version__

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
FORMATS = ("tfrecord", "wds")


@dataclass
class ShardInfo:
    """One shard file: where it is (relative to the manifest), which split/fold, and how to check and seek it."""

    file: str
    split: str  # "train" or "test"
    fold: Optional[int]
    samples: int
    bytes: int
    sha256: str
    offsets: List[int]  # byte offset of every sample (record start or first tar member header)
    ids: List[str]
    labels: Optional[List[Any]] = None
    # CRC-32C of each sample's bytes, from its offset to the next sample's (the last: to the end of the file), so
    # `verify` can name the damaged sample even in tars, whose member data carry no checksum; None when compressed
    checksums: Optional[List[int]] = None


@dataclass
class Manifest:
    """A shard set; `root` (not stored) is the folder or URL prefix the shard files live under."""

    format: str
    schema: Dict[str, str]
    shards: List[ShardInfo]
    id_col: str = "image_name"
    label_col: Optional[str] = None
    group_col: Optional[str] = None
    image_key: str = "image"
    compression: Optional[str] = None
    image_size: Optional[int] = None
    aspect: Optional[str] = None
    num_folds: Optional[int] = None
    class_counts: Dict[str, int] = field(default_factory=dict)
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

    def num_samples(self, split: str = "train") -> int:
        """Total samples in a split."""
        return sum(s.samples for s in self.select(split))

    def to_json(self) -> str:
        """The manifest as JSON text (without `root`)."""
        data = dataclasses.asdict(self)
        data.pop("root")
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


def load_manifest(path: str) -> Manifest:
    """Read a manifest from a folder, a manifest.json path or a URL; `root` is set to its folder."""
    path = str(path)
    if not path.endswith(".json"):
        path = fsutil.join(path, MANIFEST_NAME)
    try:
        with fsutil.open_binary(path) as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no manifest here; run `kitpkg convert` or `kitpkg index` first") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid manifest ({err})") from None
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: manifest format {data['format_version']} is newer than this kitpkg; upgrade kitpkg")
    data["shards"] = [ShardInfo(**s) for s in data["shards"]]
    known = {f.name for f in dataclasses.fields(Manifest)}
    manifest = Manifest(**{k: v for k, v in data.items() if k in known})
    manifest.root = path.rsplit("/", 1)[0] if fsutil.is_url(path) else os.path.dirname(os.path.abspath(path))
    return manifest
