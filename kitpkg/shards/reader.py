"""Sample-level reading of one shard, whatever its format: the one place that turns shard bytes into records."""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import IO, Any, Collection, Dict, Iterator, Optional

from google.protobuf.message import DecodeError

from .example import decode_example, scalar
from .manifest import Manifest
from .tfrecord import RecordError, is_gzip, iter_records, read_record, seek
from .wds import IMAGE_EXTS, iter_tar_samples, read_tar_sample


@dataclass
class Record:
    """One sample as stored: its id, the encoded image bytes, the other columns, and where it starts."""

    id: str
    image: bytes
    fields: Dict[str, Any]
    offset: int


def _tfrecord_record(offset: int, data: bytes, image_key: str, id_col: str, shard: str,
                     keys: Optional[Collection[str]] = None) -> Record:
    try:
        feats = decode_example(data, None if keys is None else {image_key, id_col, *keys})
    except DecodeError as err:  # CRCs were fine: the writer stored something that is not a tf.train.Example
        raise RecordError(shard, offset, f"record is not a tf.train.Example ({err})") from None
    image = feats.pop(image_key, None)
    if not image:
        raise RecordError(shard, offset, f"record has no {image_key!r} feature")
    fields = {k: scalar(v) for k, v in feats.items()}
    return Record(str(fields.get(id_col, offset)), bytes(image[0]), fields, offset)


def _tar_record(offset: int, sample: Dict[str, bytes], id_col: str, shard: str) -> Record:
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if image is None:
        raise RecordError(shard, offset, f"sample {sample['__key__']!r} has no image member ({'/'.join(IMAGE_EXTS)})")
    try:  # tar members carry no checksum: a damaged .json/.cls is reported like any damaged sample
        fields: Dict[str, Any] = json.loads(sample["json"]) if "json" in sample else {}  # JSON only, never pickle
        if not isinstance(fields, dict):
            raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        if "cls" in sample and "cls" not in fields:
            fields["cls"] = int(sample["cls"].decode().strip())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecordError(shard, offset, f"sample {sample['__key__']!r} has an unreadable .json/.cls ({err})") \
            from None
    return Record(str(fields.get(id_col, sample["__key__"])), image, fields, offset)


def iter_shard_file(
    f: IO[bytes],
    fmt: str,
    shard: str = "",
    start: int = 0,
    id_col: str = "image_name",
    image_key: str = "image",
    check_crc: bool = True,
) -> Iterator[Record]:
    """Yield the records of an open shard from byte offset `start`; damage raises RecordError (shard + offset)."""
    if fmt == "tfrecord":
        for offset, data in iter_records(f, shard, start, check_crc):
            yield _tfrecord_record(offset, data, image_key, id_col, shard)
    elif fmt == "wds":
        for offset, sample in iter_tar_samples(f, start, shard):
            yield _tar_record(offset, sample, id_col, shard)
    else:
        raise ValueError(f"unknown shard format {fmt!r}; expected 'tfrecord' or 'wds'")


def iter_manifest_shard(manifest: Manifest, index: int, start_sample: int = 0, path: Optional[str] = None,
                        check_crc: bool = True) -> Iterator[Record]:
    """Yield records of shard `index` of a manifest from sample `start_sample`, seeking with the stored offsets."""
    from .. import fsutil

    shard = manifest.shards[index]
    if start_sample >= shard.samples:
        return
    start = shard.offsets[start_sample] if start_sample else 0
    with fsutil.open_binary(path or manifest.path(shard)) as f:
        yield from iter_shard_file(f, manifest.format, shard.file, start, manifest.id_col, manifest.image_key,
                                   check_crc)


def open_shard(path: str) -> IO[bytes]:
    """Open a shard for random access by sample offset (GZIP TFRecords are wrapped so offsets address the content)."""
    from .. import fsutil

    f = fsutil.open_binary(path)
    return gzip.GzipFile(fileobj=f, mode="rb") if is_gzip(f) else f


def read_sample(f: IO[bytes], manifest: Manifest, index: int, sample: int, check_crc: bool = True,
                keys: Optional[Collection[str]] = None) -> Record:
    """Read sample `sample` of shard `index` from a file opened by `open_shard`, jumping to its stored offset.

    `keys` limits the TFRecord features decoded (the image and id are always kept); damage raises RecordError. With
    `check_crc`, TFRecords are checked against their own CRCs and tar samples against the manifest's CRC-32Cs.
    """
    shard = manifest.shards[index]
    offset = shard.offsets[sample]
    if manifest.format == "tfrecord":
        seek(f, offset, shard.file)
        data = read_record(f, offset, shard.file, check_crc)
        if data is None:
            raise RecordError(shard.file, offset, "file ends before this sample (truncated shard)")
        return _tfrecord_record(offset, data, manifest.image_key, manifest.id_col, shard.file, keys)
    end = shard.offsets[sample + 1] if sample + 1 < shard.samples else shard.bytes
    crc = shard.checksums[sample] if check_crc and shard.checksums else None
    return _tar_record(offset, read_tar_sample(f, offset, end, shard.file, crc), manifest.id_col, shard.file)
