"""Fold leases: which live process is training a fold, so that no second one starts on it -- here, or on another
machine sharing the run directory (a Drive folder).

The process training fold k (rank 0 of it) holds its lease (rundir.py), a JSON record {host, pid, token, heartbeat},
written atomically and refreshed every HEARTBEAT_S seconds by a thread until the fold's work ends. A lease is live while
its heartbeat is younger than STALE_AFTER_S; a lease of this host is live only while its pid runs, so a process killed
here frees its fold at once. Another host's pids mean nothing here: its lease is judged by the heartbeat alone, and
after a crash there a re-run waits until the lease is stale. Drive has no file locks: two processes that take the same
fold within the moment a lease takes to be written and read back can both win; the lease is for the cases that happen
(a re-run while the first run's workers still train, a second machine started on the same folds).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..errors import KitError
from ..fsutil import atomic_write_text
from .runstate import RunState, is_rank_zero

HEARTBEAT_S = 30.0  # how often a holder refreshes its lease
STALE_AFTER_S = 300.0  # a lease not refreshed for this long is ignored (Drive can take a minute or two to sync)


@dataclass(frozen=True)
class Lease:
    """Who holds a fold: the machine, the process there, a token unique to this holding, the last heartbeat time."""

    host: str
    pid: int
    token: str
    heartbeat: float


def read_lease(path: Path) -> Optional[Lease]:
    """The lease in `path`; None when there is none or it cannot be read (a file Drive has not finished syncing)."""
    try:
        data = json.loads(path.read_text())
        return Lease(str(data["host"]), int(data["pid"]), str(data["token"]), float(data["heartbeat"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_live(lease: Optional[Lease], now: float, host: str) -> bool:
    """True when `lease` still holds its fold, seen from a process on `host` at time `now`."""
    if lease is None or now - lease.heartbeat >= STALE_AFTER_S:
        return False
    return lease.host != host or _running(lease.pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody has reaped yet (a zombie) holds nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_mine(lease: Lease) -> bool:
    return lease.host == socket.gethostname() and lease.pid == os.getpid()


def busy_message(k: int, lease: Lease, path: Path) -> str:
    """The one line that refuses fold k held by `lease`, with what to do."""
    age = max(0.0, time.time() - lease.heartbeat)
    return (f"fold {k} is being trained by {lease.host} pid {lease.pid} (its lease {path} was refreshed {age:.0f} s "
            f"ago); let that run finish or stop it, or run the other folds with --folds; a lease not refreshed for "
            f"{STALE_AFTER_S:.0f} s is ignored")


def check_free(state: RunState, folds: Sequence[int]) -> None:
    """KitError for the first of `folds` that another live process holds (checked by rank 0 only)."""
    if not is_rank_zero():
        return
    now, host = time.time(), socket.gethostname()
    for k in folds:
        lease = read_lease(state.paths.lease(k))
        if lease is not None and not _is_mine(lease) and is_live(lease, now, host):
            raise KitError(busy_message(k, lease, state.paths.lease(k)))


@contextmanager
def hold_fold(state: RunState, k: int) -> Iterator[None]:
    """Hold fold k's lease while the block runs (refusing a fold another live process holds); rank 0 only."""
    if not is_rank_zero():
        yield
        return
    check_free(state, [k])
    path = state.paths.lease(k)
    lease = Lease(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time())
    _write(path, lease)
    winner = read_lease(path)
    if winner is None or winner.token != lease.token:  # another process wrote its lease in the same moment
        raise KitError(busy_message(k, winner or lease, path))
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(path, lease, stop), name=f"kitpkg-lease-fold{k}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        current = read_lease(path)
        if current is not None and current.token == lease.token:
            path.unlink(missing_ok=True)


def _write(path: Path, lease: Lease) -> None:
    atomic_write_text(path, json.dumps(asdict(lease)))


def _beat(path: Path, lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        current = read_lease(path)
        if current is not None and current.token != lease.token:
            return  # taken over after this process stalled past STALE_AFTER_S: never overwrite the new holder
        try:
            _write(path, Lease(lease.host, lease.pid, lease.token, time.time()))
        except OSError:
            pass  # a Drive hiccup: the next beat tries again (the lease goes stale only after many misses)
