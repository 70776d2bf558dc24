"""WebDataset tar shards: deterministic writing (fixed metadata) and sequential reading from any sample's offset."""
from __future__ import annotations

import io
import re
import tarfile
from typing import IO, Dict, Iterator, Tuple

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
    from .tfrecord import RecordError

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
