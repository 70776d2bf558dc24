"""TFRecord framing without TensorFlow: masked CRC-32C on write, both CRCs verified on read, GZIP files readable.

Record layout (tensorflow core/lib/io/record_writer.h):
``uint64 length LE | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from typing import IO, Iterator, Optional, Tuple

import crc32c as _crc32c

from ..fsutil import is_gzip
from .damage import RecordError

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)  # what GzipFile raises on a cut or damaged stream


def crc32c(data: bytes) -> int:
    """Plain CRC-32C (Castagnoli) of `data`, computed by the C-accelerated crc32c package."""
    return _crc32c.crc32c(data)


def masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC-32C: rotate right by 15 and add a constant."""
    crc = _crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One complete TFRecord (header, data, footer) as bytes."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


class TFRecordWriter:
    """Appends framed records to a binary file object and reports each record's start offset."""

    def __init__(self, fileobj: IO[bytes]):
        self._f = fileobj
        self.offset = 0

    def write(self, data: bytes) -> int:
        """Write one record; return the offset at which it starts."""
        start = self.offset
        framed = frame(data)
        self._f.write(framed)
        self.offset += len(framed)
        return start


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) == n:
        return data
    chunks = [data]  # network and gzip streams may return short reads
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def seek(f: IO[bytes], offset: int, shard: str = "") -> None:
    """Seek to a record's offset; on a GZIP file (which seeks by decompressing) damage raises RecordError."""
    try:
        f.seek(offset)
    except _GZIP_ERRORS as err:
        raise RecordError(shard, offset, f"damaged GZIP stream ({err})") from None


def read_record(f: IO[bytes], offset: int, shard: str = "", check_crc: bool = True) -> Optional[bytes]:
    """Read the record that starts at the current position (`offset` is only for messages); None at a clean end."""
    try:
        header = _read_exact(f, 12)
        if not header:
            return None
        if len(header) < 12:
            raise RecordError(shard, offset, "truncated record header")
        length, length_crc = _HEADER.unpack(header)
        if check_crc and masked_crc(header[:8]) != length_crc:
            raise RecordError(shard, offset, "corrupted record length (CRC mismatch)")
        body = _read_exact(f, length + 4)
    except _GZIP_ERRORS as err:
        raise RecordError(shard, offset, f"damaged GZIP stream ({err})") from None
    if len(body) < length + 4:
        raise RecordError(shard, offset, f"truncated record ({len(body)} of {length + 4} bytes)")
    data = body[:length]
    if check_crc and masked_crc(data) != _FOOTER.unpack_from(body, length)[0]:
        raise RecordError(shard, offset, "corrupted record data (CRC mismatch)")
    return data


def iter_records(
    f: IO[bytes], shard: str = "", start: int = 0, check_crc: bool = True
) -> Iterator[Tuple[int, bytes]]:
    """Yield (offset, data) for every record from byte `start` of a plain stream (or of a GZIP file's content)."""
    if is_gzip(f):
        f = gzip.GzipFile(fileobj=f, mode="rb")
    if start:
        seek(f, start, shard)  # GzipFile seeks forward by decompressing; plain files jump
    offset = start
    while True:
        data = read_record(f, offset, shard, check_crc)
        if data is None:
            return
        yield offset, data
        offset += 16 + len(data)
