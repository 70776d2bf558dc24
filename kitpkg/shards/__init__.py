"""Shard formats (TFRecord, WebDataset tar), the manifest, conversion, verification and indexing."""
from .formats import RecordError
from .manifest import Manifest, ShardInfo, load_manifest
from .reader import Record, iter_manifest_shard, iter_shard_file

__all__ = ["Manifest", "ShardInfo", "load_manifest", "Record", "iter_manifest_shard", "iter_shard_file", "RecordError"]
