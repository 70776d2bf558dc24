"""Small file-system helpers: atomic writes, hashing, opening local paths and fsspec URLs."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from .errors import KitError

PathLike = Union[str, os.PathLike]
_CHUNK = 1 << 20


def is_url(path: PathLike) -> bool:
    """True for fsspec-style URLs such as gs://, s3:// or https://."""
    return "://" in str(path) and not str(path).startswith("file://")


def join(base: PathLike, name: str) -> str:
    """Join a shard file name onto a local folder or a URL prefix."""
    base = str(base)
    if is_url(base):
        return base.rstrip("/") + "/" + name
    return os.path.join(base, name)


def open_binary(path: PathLike) -> IO[bytes]:
    """Open a local path or an fsspec URL for binary reading (fsspec is imported only for URLs)."""
    if is_url(path):
        import fsspec  # lazy: only remote shards need it

        return fsspec.open(str(path), "rb").open()
    return open(path, "rb", buffering=-1)


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(fileobj: IO[bytes]) -> bool:
    """True when the file starts with the GZIP magic bytes (the position is restored)."""
    pos = fileobj.tell()
    magic = fileobj.read(2)
    fileobj.seek(pos)
    return magic == GZIP_MAGIC


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open_binary(path) as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temp_pattern(name: str) -> str:
    """The glob of atomic_write's temporary files beside a file named `name` (left behind only by a killed write)."""
    return f".{name}.*.tmp"


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`, fsync it, and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # matches temp_pattern
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are shared (Drive, Kaggle datasets) like any written file
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically (temp name, then rename)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_copy(src: PathLike, dest: PathLike) -> None:
    """Copy a local file to `dest` (possibly a slow mount such as Drive) atomically, refusing a short copy."""
    expected = os.path.getsize(src)
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
        copied = fout.tell()
        if copied != expected:  # raising inside atomic_write drops the temp file: nothing half-written appears
            raise OSError(f"{dest}: copy is {copied} bytes, expected {expected}; disk full?")


def ensure_folder(path: PathLike, what: str = "output folder") -> Path:
    """Create the folder `path` (parents too); KitError naming it when it (or a parent) is a file or cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise KitError(f"{path}: a file, not a folder; give another {what}") from None
    except OSError as err:  # a parent is a file, no permission, a read-only file system
        raise KitError(f"{path}: cannot create the {what} ({err.strerror or err}); give another one") from None
    return path


@contextlib.contextmanager
def disk_full_is_kit_error(folder: PathLike, advice: str) -> Iterator[None]:
    """Turn "no space left on device" (or over quota) inside the block into one KitError naming `folder`."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise KitError(f"{folder}: the disk is full ({err.strerror or 'no space left on device'}); free some space "
                       f"(or choose another folder), then {advice}") from None
