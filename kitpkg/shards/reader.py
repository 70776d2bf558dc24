"""Sample-level reading of one shard, whatever its format: the one place that turns shard bytes into records (each
format's own reading is its entry in formats.FORMATS)."""
from __future__ import annotations

import gzip
from typing import IO, Collection, Iterator, Optional

from .formats import IMAGE_KEY, Record, shard_format
from .manifest import Manifest
from .options import ConvertOptions

__all__ = ["Record", "iter_shard_file", "iter_manifest_shard", "open_shard", "read_sample"]


def iter_shard_file(
    f: IO[bytes],
    fmt: str,
    shard: str = "",
    start: int = 0,
    id_col: str = ConvertOptions.id_col,
    image_key: str = IMAGE_KEY,
    check_crc: bool = True,
) -> Iterator[Record]:
    """Yield the records of an open shard from byte offset `start`; damage raises RecordError (shard + offset)."""
    yield from shard_format(fmt).stream(f, shard, start, id_col, image_key, check_crc)


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
    return gzip.GzipFile(fileobj=f, mode="rb") if fsutil.is_gzip(f) else f


def read_sample(f: IO[bytes], manifest: Manifest, index: int, sample: int, check_crc: bool = True,
                keys: Optional[Collection[str]] = None) -> Record:
    """Read sample `sample` of shard `index` from a file opened by `open_shard`, jumping to its stored offset.

    `keys` limits the TFRecord features decoded (the image and id are always kept); damage raises RecordError. With
    `check_crc`, TFRecords are checked against their own CRCs and tar samples against the manifest's CRC-32Cs.
    """
    return shard_format(manifest.format).sample(f, manifest, manifest.shards[index], sample, check_crc, keys)
