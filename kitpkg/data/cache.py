"""Local copies of shards that live on slow mounts (Drive, /kaggle/input) or behind URLs.

A copy is verified against the manifest's byte count and sha256 before it appears under its final name (temp file +
rename), so a file under its final name is always complete and correct; names carry a sha256 prefix, so equal content
is reused whatever folder or URL it came from. Readers call `resolve`, which returns the local copy once it exists and
the original until then -- this is what lets a background thread copy later shards while earlier ones are read.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import warnings
from typing import List, Optional, Sequence, Tuple

from .. import fsutil
from ..errors import KitError
from ..shards.manifest import Manifest, ShardInfo

_CHUNK = 4 << 20


class ShardCache:
    """A folder of verified shard copies."""

    def __init__(self, folder: fsutil.PathLike):
        self.folder = os.path.abspath(os.fspath(folder))
        self.errors: List[str] = []  # failures of background copies (the original is read instead)
        self._thread: Optional[threading.Thread] = None

    def local_path(self, shard: ShardInfo) -> str:
        """Where the copy of a shard lives (content-addressed: sha256 prefix + file name)."""
        tag = (shard.sha256 or "nosha")[:16]
        return os.path.join(self.folder, f"{tag}-{os.path.basename(shard.file)}")

    def is_ready(self, shard: ShardInfo) -> bool:
        """True when a verified copy is there (the name only ever holds verified, complete files)."""
        path = self.local_path(shard)
        return os.path.exists(path) and os.path.getsize(path) == shard.bytes

    def resolve(self, manifest: Manifest, index: int) -> str:
        """The local copy of shard `index` when ready, else its original path or URL."""
        shard = manifest.shards[index]
        return self.local_path(shard) if self.is_ready(shard) else manifest.path(shard)

    def fetch(self, manifest: Manifest, index: int) -> str:
        """Copy shard `index` here unless a verified copy exists; return the local path."""
        shard = manifest.shards[index]
        dest = self.local_path(shard)
        if self.is_ready(shard):
            return dest
        source = manifest.path(shard)
        digest, size = hashlib.sha256(), 0
        with fsutil.atomic_write(dest) as out, fsutil.open_binary(source) as src:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            # raising here removes the temp file: a bad copy never appears under the final name
            if size != shard.bytes:
                raise KitError(f"{source}: {size} bytes but the manifest says {shard.bytes}; the shard changed or is "
                               "incomplete (Drive may still be syncing) -- re-run `kitpkg index` or wait and retry")
            if shard.sha256 and digest.hexdigest() != shard.sha256:
                raise KitError(f"{source}: sha256 differs from the manifest; the shard changed since it was indexed "
                               "-- re-run `kitpkg index`/`kitpkg convert`")
        return dest

    def _check_space(self, manifest: Manifest, indices: Sequence[int]) -> None:
        os.makedirs(self.folder, exist_ok=True)
        need = sum(manifest.shards[i].bytes for i in indices if not self.is_ready(manifest.shards[i]))
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise KitError(f"cache_dir {self.folder}: shards need {need / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB "
                           "free; choose another cache_dir or set cache_dir=None to read in place")

    def fetch_all(self, items: Sequence[Tuple[Manifest, int]], background: bool = False) -> None:
        """Copy shards in the given order; in the background, failures are recorded in `errors` and warned about."""
        for manifest in {id(m): m for m, _ in items}.values():
            self._check_space(manifest, [i for m, i in items if m is manifest])
        if not background:
            for manifest, index in items:
                self.fetch(manifest, index)
            return
        self._thread = threading.Thread(target=self._copy_quietly, args=(list(items),), daemon=True,
                                        name="kitpkg-shard-cache")
        self._thread.start()

    def _copy_quietly(self, items: List[Tuple[Manifest, int]]) -> None:
        for manifest, index in items:
            try:
                self.fetch(manifest, index)
            except Exception as err:  # the reader falls back to the original; the user still hears about it
                self.errors.append(str(err))
                warnings.warn(f"kitpkg cache: {err}", RuntimeWarning, stacklevel=1)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until a background copy has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def __getstate__(self):
        # DataLoader workers get the folder only: they read copies as they appear, the thread stays in the parent
        return {"folder": self.folder, "errors": [], "_thread": None}
