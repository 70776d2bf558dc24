"""Writing one shard in either format while recording what its ShardInfo needs (offsets, ids, sha256, CRCs).

One writer serves every producer of shards (`kitpkg convert`, `kitpkg pseudo`), so both formats are laid out the same
way everywhere: TFRecord = one tf.train.Example per sample (`image` + the row's columns); WebDataset = `KEY.jpg` +
`KEY.json` (the row) + `KEY.cls` (the class index) when the sample has a label.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import IO, Any, Dict, List, Optional, Sequence

from crc32c import crc32c

from .example import encode_example
from .manifest import ShardInfo
from .tfrecord import TFRecordWriter
from .wds import TarShardWriter


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


def _jsonable(row: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


class ShardWriter:
    """One shard being written into an open binary file; `finish()` returns its ShardInfo (no re-read needed)."""

    def __init__(self, f: IO[bytes], fmt: str, schema: Dict[str, str], image_key: str = "image",
                 classes: Optional[Sequence[Any]] = None):
        self.out, self.fmt, self.schema, self.image_key = _HashingFile(f), fmt, schema, image_key
        self.classes = list(classes or [])
        self.writer = TFRecordWriter(self.out) if fmt == "tfrecord" else TarShardWriter(self.out)
        self.offsets: List[int] = []
        self.ids: List[str] = []
        self.labels: List[Any] = []

    def add(self, key: str, sample_id: str, image: bytes, row: Dict[str, Any], label: Any = None) -> None:
        """Append one sample: its tar key, id, encoded image, columns (label and fold included) and label."""
        self.out.mark()
        if self.fmt == "tfrecord":
            offset = self.writer.write(encode_example({self.image_key: image, **row}, self.schema))
        else:
            members = {"jpg": image, "json": json.dumps(_jsonable(row), sort_keys=True).encode()}
            cls = self._class_index(label)
            if cls is not None:
                members["cls"] = str(cls).encode()
            offset = self.writer.write(key, members)
        self.offsets.append(offset)
        self.ids.append(sample_id)
        self.labels.append(label)

    def _class_index(self, label: Any) -> Optional[int]:
        if isinstance(label, int) and not isinstance(label, bool):
            return label
        return self.classes.index(label) if label is not None and label in self.classes else None

    def finish(self, file: str, split: str, fold: Optional[int], keep_labels: bool = True) -> ShardInfo:
        """Close the format's framing and describe the shard."""
        if self.fmt == "wds":
            self.writer.close()
        return ShardInfo(file, split, fold, len(self.ids), self.out.bytes, self.out.sha.hexdigest(), self.offsets,
                         self.ids, self.labels if keep_labels else None, self.out.close_checksums())
