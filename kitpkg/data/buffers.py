"""Recycled shared-memory batch buffers: a DataLoader worker writes each batch into one of a few shared buffers and
reuses a buffer only after the main process has dropped every reference to the batch it carried.

Why: a fresh shared-memory tensor per batch (what a DataLoader worker normally sends) costs the kernel a page fault,
a page clear and a page-cache insert and removal for every 4 KiB of every batch; what recycling saves is in the
README's benchmark table (benchmarks/loader.py measures the loader).

Protocol (one `BatchBuffers` per ShardLoader, created in the main process at its first `iter()` and handed to the
workers through `ShardDataset.serve(pool)`; a batch's ticket travels back in `WorkerMessage.ticket`, message.py):
- `tickets[w, s]` (shared) is 0 when worker w's buffer s is free, else the ticket of the batch it carries. Only a
  worker turns 0 into a ticket (`take`), only the main process turns a ticket back into 0 (`reclaim`), both under
  one inter-process lock.
- The main process tracks every batch it hands out (`track`): when the batch's storage dies (every view, numpy
  array and pinned copy source gone) a weakref finalizer queues its ticket, and the next `reclaim` frees the buffer.
  A batch that is not shared memory (already copied, e.g. pinned) is released at once. Only references in the main
  process count: a batch sent on to another process must be cloned first (or use ShardLoader(recycle_buffers=False)).
- Every `iter()` of the loader starts a new generation. A worker takes buffers only for the generation it started
  in, so batches of an abandoned iteration are never overwritten; after the DataLoader has drained them, their
  untracked tickets are freed.
A worker that finds no free buffer allocates a fresh shared tensor, as PyTorch does: never a wait, never a reuse of a
buffer the consumer may still read. A lock that cannot be had within a few seconds (a worker killed while holding it)
turns recycling off for the rest of the run instead of hanging it.
"""
from __future__ import annotations

import multiprocessing
import secrets
import weakref
from collections import deque
from multiprocessing.context import get_spawning_popen
from typing import Any, Deque, List, Optional, Set, Tuple

import numpy as np
import torch
from torch.utils.data import get_worker_info

Ticket = Tuple[int, int, int, int]  # (pool token, worker, slot, ticket value)
_installed: Optional["BatchBuffers"] = None  # the pool of this worker process's current iteration
_LOCK_WAIT_S = 5.0


def shared_empty(nbytes: int) -> torch.UntypedStorage:
    """A fresh shared-memory storage of `nbytes` (sent to another process without a copy)."""
    return torch.UntypedStorage._new_shared(nbytes)


def view_as(storage: torch.UntypedStorage, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous `shape` tensor over the first bytes of `storage`."""
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def batch_tensor(shape: Tuple[int, ...], dtype: torch.dtype) -> Tuple[torch.Tensor, Optional[Ticket]]:
    """An uninitialised batch tensor: plain in the main process, a recycled or fresh shared one in a worker."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype), None
    nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
    if _installed is not None:
        taken = _installed.take(nbytes)
        if taken is not None:
            storage, ticket = taken
            return view_as(storage, shape, dtype), ticket
    return view_as(shared_empty(nbytes), shape, dtype), None


def begin_worker_iteration(pool: Optional["BatchBuffers"]) -> None:
    """In a worker, at the start of each dataset iteration: use `pool` (None: no recycling) for this iteration."""
    global _installed
    info = get_worker_info()
    if info is None or pool is None or pool.lock is None:
        _installed = None
        return
    if pool._worker != info.id:
        pool.install(info.id)
    pool.begin_iteration()
    _installed = pool


class BatchBuffers:
    """Up to `slots` recycled shared buffers per worker for `workers` workers (started by `context`, a multiprocessing
    context or start method name, None for the default); see the module docstring."""

    def __init__(self, workers: int, slots: int, context: Any = None):
        self.workers, self.slots = int(workers), int(slots)
        self.token = secrets.randbits(62)  # tickets of another loader's pool are never freed by this one
        self.tickets = torch.zeros(self.workers, self.slots, dtype=torch.int64).share_memory_()
        self.generation = torch.zeros(1, dtype=torch.int64).share_memory_()
        # the lock must come from the workers' start method (a fork-context lock cannot reach spawned workers)
        ctx = multiprocessing.get_context(context) if context is None or isinstance(context, str) else context
        self.lock: Any = ctx.Lock()
        self._init_local()

    def _init_local(self) -> None:
        # main process: tickets handed out and not yet freed, and finalized ones waiting for `reclaim`
        self._live: Set[Ticket] = set()
        self._released: Deque[Ticket] = deque()
        # worker process: its own buffers (never pickled) and where it is
        self._storages: List[Optional[torch.UntypedStorage]] = [None] * self.slots
        self._worker, self._generation, self._seq = -1, 0, 0

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_live", "_released", "_storages")}
        if get_spawning_popen() is None:  # a copy or pickle, not a worker being started: a pool that never recycles
            state["lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_local()

    def _acquire(self) -> bool:
        if self.lock is not None and self.lock.acquire(timeout=_LOCK_WAIT_S):
            return True
        self.lock = None  # held by a process that died holding it: stop recycling rather than hang
        return False

    # ---- worker side -------------------------------------------------------------------------------------------
    def install(self, worker_id: int) -> None:
        """Make this the pool of the calling worker process."""
        self._init_local()
        self._worker = worker_id if 0 <= worker_id < self.workers else -1

    def begin_iteration(self) -> None:
        """Remember the generation this worker iteration belongs to."""
        self._generation = int(self.generation[0])

    def take(self, nbytes: int) -> Optional[Tuple[torch.UntypedStorage, Ticket]]:
        """A free buffer of at least `nbytes` and its ticket, or None (no free slot, or a stale iteration)."""
        if self._worker < 0 or not self._acquire():
            return None
        row = self.tickets[self._worker].numpy()
        try:
            if int(self.generation[0]) != self._generation:
                return None  # this iteration was abandoned by the main process: never reuse its buffers
            free = [s for s in range(self.slots) if row[s] == 0]
            if not free:
                return None
            fitting = [s for s in free if self._storages[s] is not None and self._storages[s].nbytes() >= nbytes]
            empty = [s for s in free if self._storages[s] is None]
            slot = (fitting or empty or free)[0]
            self._seq += 1
            value = (self._generation << 32) | self._seq
            row[slot] = value
        finally:
            self.lock.release()
        if self._storages[slot] is None or self._storages[slot].nbytes() < nbytes:
            self._storages[slot] = shared_empty(nbytes)
        return self._storages[slot], (self.token, self._worker, slot, value)

    # ---- main side ---------------------------------------------------------------------------------------------
    def new_generation(self) -> None:
        """Start a new iteration: workers still producing for an earlier one stop taking buffers."""
        if self._acquire():
            self.generation[0] += 1
            self.lock.release()

    def track(self, tensor: torch.Tensor, ticket: Ticket) -> None:
        """Free `ticket`'s buffer once `tensor`'s storage dies (at once when it is not the shared buffer itself)."""
        ticket = tuple(int(x) for x in ticket)
        if ticket[0] != self.token:
            return  # another loader's pool (a dataset shared by two loaders): not ours to free
        if tensor.is_shared():
            self._live.add(ticket)
            weakref.finalize(tensor.untyped_storage(), self._released.append, ticket)
        else:
            self._released.append(ticket)
        self.reclaim()

    def reclaim(self, stale: bool = False) -> None:
        """Free the buffers of dead batches; with `stale`, also those of an earlier generation never handed out."""
        if not self._acquire():
            return
        tickets = self.tickets.numpy()
        try:
            while self._released:
                ticket = self._released.popleft()
                self._live.discard(ticket)
                _, w, s, value = ticket
                if tickets[w, s] == value:
                    tickets[w, s] = 0
            if stale:
                current = int(self.generation[0])
                live = {(w, s) for _, w, s, _ in self._live}
                for w, s in zip(*np.nonzero(tickets)):
                    if (int(tickets[w, s]) >> 32) < current and (w, s) not in live:
                        tickets[w, s] = 0
        finally:
            self.lock.release()
