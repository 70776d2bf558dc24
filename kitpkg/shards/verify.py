"""`kitpkg verify`: check every shard against its manifest (size, sha256, per-sample CRCs, record CRCs, counts, ids)."""
from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence, Tuple, Union

from crc32c import crc32c

from .. import fsutil
from .formats import RecordError
from .manifest import Manifest, ShardInfo, load_manifest
from .reader import iter_shard_file

_CHUNK = 1 << 20


def scan_bytes(path: str, offsets: Sequence[int]) -> Tuple[str, int, List[int]]:
    """(sha256, size, CRC-32C of each sample's byte range) of a shard file, in one sequential read."""
    digest = hashlib.sha256()
    checksums: List[int] = []
    bounds = list(offsets[1:]) + [None]
    size = 0
    with fsutil.open_binary(path) as f:
        if offsets and offsets[0]:
            head = f.read(offsets[0])
            digest.update(head)
            size += len(head)
        for end in bounds:
            crc = 0
            while end is None or size < end:
                chunk = f.read(_CHUNK if end is None else min(_CHUNK, end - size))
                if not chunk:
                    break
                digest.update(chunk)
                crc = crc32c(chunk, crc)
                size += len(chunk)
            checksums.append(crc)
    return digest.hexdigest(), size, checksums


def _locate(shard: ShardInfo, checksums: List[int]) -> Optional[str]:
    """Where the bytes first differ from what the manifest recorded (sample index, id, offset)."""
    for i, (got, want) in enumerate(zip(checksums, shard.checksums or [])):
        if got != want:
            return f"sample {i} ({shard.ids[i]}) damaged at offset {shard.offsets[i]}"
    return None


def verify_shard(manifest: Manifest, index: int, deep: bool = True) -> List[str]:
    """Problems found in one shard (empty when intact); each names the shard file and, where known, the offset."""
    shard = manifest.shards[index]
    path = manifest.path(shard)
    try:
        sha, size, checksums = scan_bytes(path, shard.offsets if manifest.compression is None else [0])
    except FileNotFoundError:
        return [f"{shard.file}: missing (expected at {path})"]
    problems = []
    if size != shard.bytes:
        where = f"; truncated at offset {size}" if size < shard.bytes else ""
        problems.append(f"{shard.file}: {size} bytes, manifest says {shard.bytes}{where}")
    if sha != shard.sha256:
        where = _locate(shard, checksums) if manifest.compression is None else None
        problems.append(f"{shard.file}: sha256 differs from the manifest" + (f"; {where}" if where else ""))
    if not deep:
        return problems
    n = 0
    try:
        with fsutil.open_binary(path) as f:
            for n, record in enumerate(iter_shard_file(f, manifest.format, shard.file, 0, manifest.id_col,
                                                       manifest.image_key), start=1):
                i = n - 1
                if i >= shard.samples:
                    problems.append(f"{shard.file}: extra record at offset {record.offset} (manifest: "
                                    f"{shard.samples} samples)")
                    return problems
                if record.offset != shard.offsets[i] or record.id != shard.ids[i]:
                    problems.append(f"{shard.file}: sample {i} is {record.id!r} at offset {record.offset}, manifest "
                                    f"says {shard.ids[i]!r} at offset {shard.offsets[i]}")
                    return problems  # the rest would only repeat this; the file did not end here
    except RecordError as err:
        problems.append(f"{shard.file}: {err.reason} at offset {err.offset}")
        return problems
    if n < shard.samples:
        problems.append(f"{shard.file}: {n} samples, manifest says {shard.samples}; reading stopped at sample {n} "
                        f"({shard.ids[n]}), offset {shard.offsets[n]}")
    return problems


def verify(manifest_or_dir: Union[Manifest, str], deep: bool = True) -> List[str]:
    """Check every shard of a manifest (or of the manifest in a folder); return the problems, empty when all intact."""
    manifest = manifest_or_dir if isinstance(manifest_or_dir, Manifest) else load_manifest(manifest_or_dir)
    problems: List[str] = []
    for index in range(len(manifest.shards)):
        problems.extend(verify_shard(manifest, index, deep))
    return problems
