"""RecordError: damage found in a shard of any format (a CRC mismatch, a truncated file, a sample that is no sample).

Every codec raises it (tfrecord.py, wds.py, the readers in formats.py's table) and every reader of shards catches it
from the format table (`formats.RecordError`): the loader, `verify` and `index` never name a codec.
"""
from __future__ import annotations


class RecordError(ValueError):
    """A damaged record: names the shard and the byte offset where the damage starts."""

    def __init__(self, shard: str, offset: int, reason: str):
        super().__init__(f"{shard}: {reason} at offset {offset}")
        self.shard, self.offset, self.reason = shard, offset, reason
