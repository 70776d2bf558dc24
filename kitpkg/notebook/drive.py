"""Google Drive on Colab: mount once, and turn Drive's known failures into advice the user can act on."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import KitError

PathLike = Union[str, os.PathLike]

_ADVICE = ("; what helps: re-run the cell (Drive often answers the second time); if it keeps failing run "
           "`from google.colab import drive; drive.flush_and_unmount()` then re-run, or restart the runtime; keep "
           "folders on Drive to a few hundred files (shards, not loose JPEGs) and let the kit copy shards to local "
           "disk")


def is_mounted(mountpoint: PathLike) -> bool:
    """True if Drive is already mounted at `mountpoint` (Colab's mount creates MyDrive inside it)."""
    return (Path(mountpoint) / "MyDrive").is_dir()


def mount_drive(mountpoint: PathLike = "/content/drive", timeout_s: float = 120.0) -> Path:
    """Mount Google Drive at `mountpoint` unless it is mounted already; return the MyDrive folder."""
    mountpoint = Path(mountpoint)
    if is_mounted(mountpoint):
        return mountpoint / "MyDrive"
    try:
        from google.colab import drive  # only importable on Colab (tests put a fake in sys.modules)
    except ImportError:
        raise KitError(f"Drive is not mounted at {mountpoint} and google.colab is not importable: run this on Colab, "
                       "or set KITPKG_PLATFORM=local") from None
    if mountpoint.is_dir() and any(mountpoint.iterdir()):
        raise KitError(f"{mountpoint}: the mountpoint holds files but no MyDrive; Drive can only mount on an empty "
                       "folder: move those files away (or set KITPKG_DRIVE_ROOT to another folder) and re-run")
    print(f"kitpkg: mounting Google Drive at {mountpoint} (timeout {timeout_s:.0f} s)", flush=True)
    try:
        drive.mount(str(mountpoint), timeout_ms=int(timeout_s * 1000))
    except ValueError as err:  # Colab raises ValueError('mount failed: timeout during initial read of root folder')
        raise KitError(f"mounting Google Drive at {mountpoint} failed ({err}); a slow Drive: pass "
                       f"setup(mount_timeout_s={int(timeout_s * 2)})" + _ADVICE) from None
    except OSError as err:
        raise _io_error(mountpoint, err) from None
    if not is_mounted(mountpoint):
        raise KitError(f"mounting Google Drive at {mountpoint} returned but no MyDrive folder appeared" + _ADVICE)
    return mountpoint / "MyDrive"


def _io_error(path: PathLike, err: OSError) -> KitError:
    if err.errno == errno.EIO:
        return KitError(f"{path}: Google Drive input/output error (Errno 5), usual with folders of thousands of files "
                        "or a Drive that has not synced yet" + _ADVICE)
    return KitError(f"{path}: {err.strerror or err}" + _ADVICE)


@contextlib.contextmanager
def drive_errors(path: Optional[PathLike] = None) -> Iterator[None]:
    """Re-raise Drive's Errno 5 (and other OS errors on Drive) inside the block as a KitError with advice."""
    try:
        yield
    except OSError as err:
        if isinstance(err, (FileNotFoundError, FileExistsError, PermissionError)):
            raise  # ordinary errors keep their type and message
        raise _io_error(path or err.filename or "Google Drive", err) from err
