"""Writing one shard in any format while recording what its ShardInfo needs (offsets, ids, sha256, CRCs).

One writer serves every producer of shards (`kitpkg convert`, `kitpkg pseudo`), so each format is laid out the same
way everywhere; how a sample is laid out is its format's `writer` in formats.FORMATS.
"""
from __future__ import annotations

import hashlib
from typing import IO, Any, Dict, List, Optional, Sequence

from crc32c import crc32c

from .formats import IMAGE_KEY, shard_format
from .manifest import ShardInfo


class _HashingFile:
    """A write-only file wrapper that hashes what passes through: sha256 of all, CRC-32C per sample (see `mark`)."""

    def __init__(self, f: IO[bytes]):
        self._f, self.sha, self.bytes = f, hashlib.sha256(), 0
        self.crc, self.checksums, self._marked = 0, [], False

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.crc = crc32c(data, self.crc)
        self.bytes += len(data)
        return self._f.write(data)

    def mark(self) -> None:
        """A new sample starts here: close the running CRC of the previous one."""
        if self._marked:
            self.checksums.append(self.crc)
        self.crc, self._marked = 0, True

    def close_checksums(self) -> List[int]:
        """Per-sample CRCs, the last one running to the end of the file."""
        return self.checksums + ([self.crc] if self._marked else [])

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._f.flush()


class ShardWriter:
    """One shard being written into an open binary file; `finish()` returns its ShardInfo (no re-read needed)."""

    def __init__(self, f: IO[bytes], fmt: str, schema: Dict[str, str], image_key: str = IMAGE_KEY,
                 classes: Optional[Sequence[Any]] = None):
        self.out = _HashingFile(f)
        self.classes = list(classes or [])
        self.writer = shard_format(fmt).writer(self.out, schema, image_key)
        self.offsets: List[int] = []
        self.ids: List[str] = []
        self.labels: List[Any] = []

    def add(self, key: str, sample_id: str, image: bytes, row: Dict[str, Any], label: Any = None) -> None:
        """Append one sample: its tar key, id, encoded image, columns (label and fold included) and label."""
        self.out.mark()
        offset = self.writer.add(key, image, row, self._class_index(label))
        self.offsets.append(offset)
        self.ids.append(sample_id)
        self.labels.append(label)

    def _class_index(self, label: Any) -> Optional[int]:
        if isinstance(label, int) and not isinstance(label, bool):
            return label
        return self.classes.index(label) if label is not None and label in self.classes else None

    def finish(self, file: str, split: str, fold: Optional[int], keep_labels: bool = True) -> ShardInfo:
        """Close the format's framing and describe the shard."""
        self.writer.close()
        return ShardInfo(file, split, fold, len(self.ids), self.out.bytes, self.out.sha.hexdigest(), self.offsets,
                         self.ids, self.labels if keep_labels else None, self.out.close_checksums())
