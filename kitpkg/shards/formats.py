"""The shard formats in one table: FORMATS[name] says how a sample is written, read at its offset, read as a stream,
how a shard file is recognised, and where the label is stored.

Adding a format is one `ShardFormat` entry below plus its codec module (bytes ↔ framed samples), as tfrecord.py +
example.py are for TFRecord and wds.py is for WebDataset tars. Nothing outside kitpkg/shards names a format.
Damage in a shard of any format is one `RecordError` (shard + offset + reason), which readers take from here.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Collection, Dict, Iterator, Optional, Tuple

from google.protobuf.message import DecodeError

from .. import fsutil
from ..errors import KitError
from .damage import RecordError
from .example import BYTES, FLOAT, INT64, decode_example, encode_example, example_schema, scalar
from .tfrecord import TFRecordWriter, iter_records, masked_crc, read_record, seek
from .wds import IMAGE_EXTS, TarShardWriter, iter_tar_samples, read_tar_sample, tar_key

if TYPE_CHECKING:
    from .manifest import Manifest, ShardInfo

IMAGE_KEY = "image"  # the feature (TFRecord) / schema entry that holds the encoded image


@dataclass
class Record:
    """One sample as stored: its id, the encoded image bytes, the other columns, and where it starts."""

    id: str
    image: bytes
    fields: Dict[str, Any]
    offset: int


@dataclass(frozen=True)
class ShardFormat:
    """Everything kitpkg knows about one shard format (see the module docstring)."""

    name: str
    extensions: Tuple[str, ...]  # lower case; the first is what kitpkg writes, all are what `kitpkg index` finds
    help: str  # one line for the CLI's --format
    # the sample writer on an open file: (file, schema, image_key) → .add(key, image, row, cls) → offset; .close()
    writer: Callable[[IO[bytes], Dict[str, str], str], Any]
    # sequential: (file, shard name, start offset, id_col, image_key, check_crc) → records (verify, index, pseudo)
    stream: Callable[[IO[bytes], str, int, str, str, bool], Iterator[Record]]
    # random access: (file, manifest, shard, sample index, check_crc, TFRecord feature keys) → the record (the loader)
    sample: Callable[[IO[bytes], "Manifest", "ShardInfo", int, bool, Optional[Collection[str]]], Record]
    # (lower-case file name, its first 512 bytes) → whether a foreign file is of this format (`kitpkg index`)
    sniff: Callable[[str, bytes], bool]
    # (first record, shard path) → {column: kind} of a foreign shard (`kitpkg index`)
    schema: Callable[[Record, str], Dict[str, str]]
    compression: Callable[[bytes], Optional[str]] = lambda head: None  # of a foreign file, from its first bytes
    # the image is a column of the row (a CSV column of its name is refused); False: a member of its own
    image_in_row: bool = False
    # a member besides the row that holds the class index (read as `fields[label_member]`), or None: the label is a
    # column of the row like any other
    label_member: Optional[str] = None

    @property
    def extension(self) -> str:
        """The extension of the shard files kitpkg writes in this format."""
        return self.extensions[0]


def sample_key(sample_id: str) -> str:
    """The key a sample is stored under in every format (a tar's member names: no dots, slashes or spaces)."""
    return tar_key(sample_id)


# --- TFRecord: one tf.train.Example per sample, the image as feature `image_key` beside the row's columns ---------

class _ExampleWriter:
    def __init__(self, f: IO[bytes], schema: Dict[str, str], image_key: str):
        self._records, self._schema, self._image_key = TFRecordWriter(f), schema, image_key

    def add(self, key: str, image: bytes, row: Dict[str, Any], cls: Optional[int]) -> int:
        return self._records.write(encode_example({self._image_key: image, **row}, self._schema))

    def close(self) -> None:
        pass  # TFRecords have no end marker


def _example_record(offset: int, data: bytes, image_key: str, id_col: str, shard: str,
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


def _example_stream(f: IO[bytes], shard: str, start: int, id_col: str, image_key: str,
                    check_crc: bool) -> Iterator[Record]:
    for offset, data in iter_records(f, shard, start, check_crc):
        yield _example_record(offset, data, image_key, id_col, shard)


def _example_sample(f: IO[bytes], manifest: "Manifest", shard: "ShardInfo", sample: int, check_crc: bool,
                    keys: Optional[Collection[str]]) -> Record:
    offset = shard.offsets[sample]  # a TFRecord carries its own CRCs: the manifest's are not needed
    seek(f, offset, shard.file)
    data = read_record(f, offset, shard.file, check_crc)
    if data is None:
        raise RecordError(shard.file, offset, "file ends before this sample (truncated shard)")
    return _example_record(offset, data, manifest.image_key, manifest.id_col, shard.file, keys)


def _example_sniff(name: str, head: bytes) -> bool:
    length_crc_ok = len(head) >= 12 and masked_crc(head[:8]) == struct.unpack_from("<I", head, 8)[0]
    return head[:2] == fsutil.GZIP_MAGIC or name.endswith(_TFRECORD_EXTENSIONS) or length_crc_ok


def _example_schema(first: Record, path: str) -> Dict[str, str]:
    with fsutil.open_binary(path) as f:  # the kinds as stored (bytes/int64/float), not as decoded
        for _, data in iter_records(f, os.path.basename(path)):
            return example_schema(data)
    return {}


_TFRECORD_EXTENSIONS = (".tfrec", ".tfrecord", ".tfrecords", ".tfrec.gz", ".tfrecord.gz", ".tfrecords.gz")


# --- WebDataset tar: KEY.jpg + KEY.json (the row) + KEY.cls (the class index) when the sample has a label ---------

_TAR_LABEL = "cls"


class _TarWriter:
    def __init__(self, f: IO[bytes], schema: Dict[str, str], image_key: str):
        self._tar = TarShardWriter(f)

    def add(self, key: str, image: bytes, row: Dict[str, Any], cls: Optional[int]) -> int:
        members = {"jpg": image, "json": json.dumps(_jsonable(row), sort_keys=True).encode()}
        if cls is not None:
            members[_TAR_LABEL] = str(cls).encode()
        return self._tar.write(key, members)

    def close(self) -> None:
        self._tar.close()  # the end-of-archive blocks


def _jsonable(row: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _tar_record(offset: int, sample: Dict[str, bytes], id_col: str, shard: str) -> Record:
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if image is None:
        raise RecordError(shard, offset, f"sample {sample['__key__']!r} has no image member ({'/'.join(IMAGE_EXTS)})")
    try:  # tar members carry no checksum: a damaged .json/.cls is reported like any damaged sample
        fields: Dict[str, Any] = json.loads(sample["json"]) if "json" in sample else {}  # JSON only, never pickle
        if not isinstance(fields, dict):
            raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        if _TAR_LABEL in sample and _TAR_LABEL not in fields:
            fields[_TAR_LABEL] = int(sample[_TAR_LABEL].decode().strip())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecordError(shard, offset, f"sample {sample['__key__']!r} has an unreadable .json/.cls ({err})") \
            from None
    return Record(str(fields.get(id_col, sample["__key__"])), image, fields, offset)


def _tar_stream(f: IO[bytes], shard: str, start: int, id_col: str, image_key: str,
                check_crc: bool) -> Iterator[Record]:
    for offset, sample in iter_tar_samples(f, start, shard):
        yield _tar_record(offset, sample, id_col, shard)


def _tar_sample(f: IO[bytes], manifest: "Manifest", shard: "ShardInfo", sample: int, check_crc: bool,
                keys: Optional[Collection[str]]) -> Record:
    offset = shard.offsets[sample]
    end = shard.offsets[sample + 1] if sample + 1 < shard.samples else shard.bytes
    crc = shard.checksums[sample] if check_crc and shard.checksums else None  # tar data have no CRC of their own
    return _tar_record(offset, read_tar_sample(f, offset, end, shard.file, crc), manifest.id_col, shard.file)


def _tar_schema(first: Record, path: str) -> Dict[str, str]:
    return {IMAGE_KEY: BYTES, **{k: _json_kind(v) for k, v in sorted(first.fields.items())}}


def _json_kind(value: Any) -> str:
    if isinstance(value, int):  # bools too
        return INT64
    return FLOAT if isinstance(value, float) else BYTES


# --- the table --------------------------------------------------------------------------------------------------

FORMATS: Dict[str, ShardFormat] = {
    "tfrecord": ShardFormat(
        "tfrecord", _TFRECORD_EXTENSIONS, "tf.train.Example with `image` + every CSV column",
        writer=_ExampleWriter, stream=_example_stream, sample=_example_sample, sniff=_example_sniff,
        schema=_example_schema, compression=lambda head: "GZIP" if head[:2] == fsutil.GZIP_MAGIC else None,
        image_in_row=True),
    "wds": ShardFormat(
        "wds", (".tar",), "tars of KEY.jpg/.json/.cls", writer=_TarWriter, stream=_tar_stream, sample=_tar_sample,
        sniff=lambda name, head: name.endswith(".tar") or head[257:262] == b"ustar", schema=_tar_schema,
        label_member=_TAR_LABEL),
}
DEFAULT_FORMAT = "tfrecord"
SHARD_EXTENSIONS = tuple(ext for f in FORMATS.values() for ext in f.extensions)  # every extension index finds
WRITTEN_EXTENSIONS = tuple(f.extension for f in FORMATS.values())  # the extensions of the files kitpkg writes


def shard_format(name: str) -> ShardFormat:
    """The table entry of format `name`; KitError naming the known ones otherwise."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise KitError(f"unknown shard format {name!r}; expected one of {', '.join(FORMATS)}") from None


def detect(path: str) -> Tuple[str, Optional[str]]:
    """(format, compression) of a shard file written elsewhere, from its name and first bytes."""
    with open(path, "rb") as f:
        head = f.read(512)
    name = os.path.basename(path).lower()
    for fmt in FORMATS.values():
        if fmt.sniff(name, head):
            return fmt.name, fmt.compression(head)
    raise KitError(f"{path}: not a shard of any known format ({', '.join(FORMATS)}): no known extension "
                   f"({', '.join(SHARD_EXTENSIONS)}) and its first bytes are neither")
