"""WebDataset tar shards: deterministic writing (fixed metadata) and sequential reading from any sample's offset."""
from __future__ import annotations

import io
import re
import tarfile
from typing import IO, Dict, Iterator, Optional, Tuple

from crc32c import crc32c

from .damage import RecordError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def split_key(name: str) -> Tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the base name, the rest is the extension."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def tar_key(sample_id: str) -> str:
    """A tar key for a sample id: dots, slashes and spaces become '_' (webdataset splits keys at the first dot)."""
    return re.sub(r"[./\\\s]", "_", sample_id)


class TarShardWriter:
    """Writes samples (`KEY.ext` members) into one tar with fixed mtime/owner so equal input gives equal bytes."""

    def __init__(self, fileobj: IO[bytes]):
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)
        self._f = fileobj

    def write(self, key: str, members: Dict[str, bytes]) -> int:
        """Append one sample; return the offset of its first member header."""
        if "." in key.rpartition("/")[2]:
            raise ValueError(f"tar key {key!r} must not contain a dot (webdataset splits keys at the first dot)")
        start = self._tar.offset
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        return start

    def close(self) -> None:
        """Write the end-of-archive blocks (the file object stays open)."""
        self._tar.close()


def iter_tar_samples(f: IO[bytes], start: int = 0, shard: str = "") -> Iterator[Tuple[int, Dict[str, bytes]]]:
    """Yield (offset, {"__key__": key, ext: bytes, …}) for each sample, grouping consecutive members by key."""
    if start:
        f.seek(start)
    current: Dict[str, bytes] = {}
    current_offset = start
    try:
        with tarfile.open(fileobj=f, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = split_key(info.name)
                if current and current["__key__"] != key:
                    yield current_offset, current
                    current = {}
                if not current:
                    current = {"__key__": key}
                    current_offset = start + info.offset
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise RecordError(shard, start + info.offset, f"truncated member {info.name}")
                current[ext] = data
    except (tarfile.ReadError, EOFError) as err:
        raise RecordError(shard, current_offset, f"truncated or damaged tar ({err})") from err
    if current:
        yield current_offset, current


def read_tar_sample(f: IO[bytes], offset: int, end: int, shard: str = "",
                    crc: Optional[int] = None) -> Dict[str, bytes]:
    """The sample whose first member header is at `offset`, from exactly the bytes [offset, end) (`end`: the next
    sample's offset, or the file size for the last sample) in one read; checked against `crc` (CRC-32C of that
    range, from the manifest) when given. Damage raises RecordError (shard + offset)."""
    f.seek(offset)
    data = f.read(end - offset)
    if len(data) < end - offset:
        raise RecordError(shard, offset, "file ends inside this sample (truncated shard)")
    if crc is not None and crc32c(data) != crc:
        raise RecordError(shard, offset, "sample bytes do not match the manifest's CRC-32C (damaged shard)")
    sample = _plain_members(data, shard, offset)
    if sample is not None:
        return sample
    try:  # pax / GNU long-name headers: the tarfile module's full reader
        for _, sample in iter_tar_samples(io.BytesIO(data), 0, shard):
            return sample
    except RecordError as err:
        raise RecordError(shard, offset + err.offset, err.reason) from None
    raise RecordError(shard, offset, "no tar member at this offset")


_FILE_TYPES = (b"0", b"\0", b"7")  # regular file, old-style regular file, contiguous file
_PAX_TIMES = (b"mtime", b"atime", b"ctime")  # pax records that change nothing a reader uses


def _plain_members(data: bytes, shard: str, offset: int) -> Optional[Dict[str, bytes]]:
    """The first sample of `data`, read header by header (tarfile's TarInfo.frombuf is slow per header).

    Handles plain ustar/v7 headers with a valid checksum, and pax headers that only carry times (webdataset's
    writer puts one before every member). Returns None for anything else (other pax records, GNU long names,
    base-256 sizes, odd entries): the caller then leaves the sample to the tarfile module, which also reports damage.
    """
    sample: Dict[str, bytes] = {}
    pos = 0
    while pos + 512 <= len(data):
        header = _plain_header(data[pos:pos + 512])
        if header is None:
            return None
        name, size, kind = header
        if name is None:
            break  # end-of-archive blocks
        body = pos + 512
        if kind == b"x":
            if not _pax_times_only(data[body:body + size]):
                return None
        elif kind in _FILE_TYPES:
            key, ext = split_key(name)
            if sample and sample["__key__"] != key:
                break
            if body + size > len(data):
                raise RecordError(shard, offset + pos, f"truncated member {name}")
            sample.setdefault("__key__", key)
            sample[ext] = data[body:body + size]
        elif size:
            return None  # a link or directory entry with data: let tarfile decide how to skip it
        pos = body + -(-size // 512) * 512
    return sample or None


def _plain_header(block: bytes) -> Optional[Tuple[Optional[str], int, bytes]]:
    """(name, size, type flag) of a plain tar header, (None, 0, b"") for an end-of-archive block, None otherwise."""
    if not any(block):
        return None, 0, b""
    try:
        checksum = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None  # base-256 sizes, damage: the tarfile module decides
    kind = block[156:157]
    if checksum != sum(block[:148]) + 256 + sum(block[156:]) or kind not in _FILE_TYPES + (b"1", b"2", b"5", b"x"):
        return None
    name = block[:100].split(b"\0", 1)[0]
    if block[345]:  # a ustar name prefix; tarfile would prepend these bytes for any magic, so leave others to it
        if block[257:263] != b"ustar\x00":
            return None
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    if kind == b"\0" and name.endswith(b"/"):
        return None  # a v7 directory entry: tarfile's rule
    return name.decode("utf-8", "surrogateescape"), size, kind


def _pax_times_only(payload: bytes) -> bool:
    """Whether pax extended-header records ("<length> <key>=<value>\\n" each) hold only times."""
    pos = 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        try:
            length = int(payload[pos:space]) if space > pos else 0
        except ValueError:
            return False
        if length <= 0 or pos + length > len(payload):
            return False
        if payload[space + 1:pos + length].split(b"=", 1)[0] not in _PAX_TIMES:
            return False
        pos += length
    return True
