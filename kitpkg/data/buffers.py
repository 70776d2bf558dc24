"""Recycled shared-memory batch buffers: a DataLoader worker writes each batch into one of a few shared buffers and
reuses a buffer only after the main process has dropped every reference to the batch it carried.

Why: a fresh shared-memory tensor per batch (what a DataLoader worker normally sends) costs the kernel a page fault,
a page clear and a page-cache insert and removal for every 4 KiB -- at 64 x 384 px that was a fifth of each worker's
CPU (perf), and recycling gave +25 % images/s (benchmarks/loader.py).

Protocol (one `BatchBuffers` per ShardLoader, created in the main process, reaching its workers through the
loader's worker_init_fn):
- `tickets[w, s]` (shared) is 0 when worker w's buffer s is free, else the ticket of the batch it carries. Only a
  worker turns 0 into a ticket (`take`), only the main process turns a ticket back into 0 (`reclaim`), both under
  one inter-process lock.
- The main process tracks every batch it hands out (`track`): when the batch's storage dies (every view, numpy
  array and pinned copy source gone) a weakref finalizer queues its ticket, and the next `reclaim` frees the buffer.
  A batch that is not shared memory (already copied, e.g. pinned) is released at once.
- Every `iter()` of the loader starts a new generation. A worker takes buffers only for the generation it started
  in, so batches of an abandoned iteration are never overwritten; after the DataLoader has drained them, their
  untracked tickets are freed.
A worker that finds no free buffer allocates a fresh shared tensor, as PyTorch does: never a wait, never a reuse of a
buffer the consumer may still read.
"""
from __future__ import annotations

import multiprocessing
import weakref
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Set, Tuple

import numpy as np
import torch

Ticket = Tuple[int, int, int]  # (worker, slot, ticket value)
_installed: Optional["BatchBuffers"] = None  # this worker process's pool, set by WorkerInit


def shared_empty(nbytes: int) -> torch.UntypedStorage:
    """A fresh shared-memory storage of `nbytes` (sent to another process without a copy)."""
    return torch.UntypedStorage._new_shared(nbytes)


def view_as(storage: torch.UntypedStorage, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous `shape` tensor over the first bytes of `storage`."""
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def batch_tensor(shape: Tuple[int, ...], dtype: torch.dtype) -> Tuple[torch.Tensor, Optional[Ticket]]:
    """An uninitialised batch tensor: plain in the main process, a recycled or fresh shared one in a worker."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype), None
    nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
    if _installed is not None:
        taken = _installed.take(nbytes)
        if taken is not None:
            storage, ticket = taken
            return view_as(storage, shape, dtype), ticket
    return view_as(shared_empty(nbytes), shape, dtype), None


def begin_worker_iteration() -> None:
    """In a worker, at the start of each dataset iteration: adopt the loader's current generation."""
    if _installed is not None:
        _installed.begin_iteration()


class BatchBuffers:
    """Up to `slots` recycled shared buffers per worker for `workers` workers (started by `context`, a multiprocessing
    context or start method name, None for the default); see the module docstring."""

    def __init__(self, workers: int, slots: int, context: Any = None):
        self.workers, self.slots = int(workers), int(slots)
        self.tickets = torch.zeros(self.workers, self.slots, dtype=torch.int64).share_memory_()
        self.generation = torch.zeros(1, dtype=torch.int64).share_memory_()
        # the lock must come from the workers' start method (a fork-context lock cannot reach spawned workers)
        ctx = multiprocessing.get_context(context) if context is None or isinstance(context, str) else context
        self.lock = ctx.Lock()
        self._init_local()

    def _init_local(self) -> None:
        # main process: tickets handed out and not yet freed, and finalized ones waiting for `reclaim`
        self._live: Set[Ticket] = set()
        self._released: Deque[Ticket] = deque()
        # worker process: its own buffers (never pickled) and where it is
        self._storages: List[Optional[torch.UntypedStorage]] = [None] * self.slots
        self._worker, self._generation, self._seq = -1, 0, 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_live", "_released", "_storages"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_local()

    # ---- worker side -------------------------------------------------------------------------------------------
    def install(self, worker_id: int) -> None:
        """Make this the pool of the calling worker process (called from the loader's worker_init_fn)."""
        global _installed
        self._init_local()
        self._worker = worker_id if 0 <= worker_id < self.workers else -1
        _installed = self

    def begin_iteration(self) -> None:
        """Remember the generation this worker iteration belongs to."""
        self._generation = int(self.generation[0])

    def take(self, nbytes: int) -> Optional[Tuple[torch.UntypedStorage, Ticket]]:
        """A free buffer of at least `nbytes` and its ticket, or None (no free slot, or a stale iteration)."""
        if self._worker < 0:
            return None
        w, row = self._worker, self.tickets[self._worker].numpy()
        with self.lock:
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
        if self._storages[slot] is None or self._storages[slot].nbytes() < nbytes:
            self._storages[slot] = shared_empty(nbytes)
        return self._storages[slot], (w, slot, value)

    # ---- main side ---------------------------------------------------------------------------------------------
    def new_generation(self) -> None:
        """Start a new iteration: workers still producing for an earlier one stop taking buffers."""
        with self.lock:
            self.generation[0] += 1

    def track(self, tensor: torch.Tensor, ticket: Ticket) -> None:
        """Free `ticket`'s buffer once `tensor`'s storage dies (at once when it is not the shared buffer itself)."""
        ticket = tuple(int(x) for x in ticket)
        if tensor.is_shared():
            self._live.add(ticket)
            weakref.finalize(tensor.untyped_storage(), self._released.append, ticket)
        else:
            self._released.append(ticket)
        self.reclaim()

    def reclaim(self, stale: bool = False) -> None:
        """Free the buffers of dead batches; with `stale`, also those of an earlier generation never handed out."""
        tickets = self.tickets.numpy()
        with self.lock:
            while self._released:
                w, s, value = self._released.popleft()
                self._live.discard((w, s, value))
                if tickets[w, s] == value:
                    tickets[w, s] = 0
            if stale:
                current = int(self.generation[0])
                live = {(w, s) for w, s, _ in self._live}
                for w, s in zip(*np.nonzero(tickets)):
                    if (int(tickets[w, s]) >> 32) < current and (w, s) not in live:
                        tickets[w, s] = 0


class WorkerInit:
    """A DataLoader worker_init_fn that installs the loader's BatchBuffers, then calls the user's function."""

    def __init__(self, buffers: BatchBuffers, user_fn: Optional[Callable[[int], Any]] = None):
        while isinstance(user_fn, WorkerInit):  # a loader re-created from another (Lightning does): one pool only
            user_fn = user_fn.user_fn
        self.buffers, self.user_fn = buffers, user_fn

    def __call__(self, worker_id: int) -> None:
        self.buffers.install(worker_id)
        if self.user_fn is not None:
            self.user_fn(worker_id)
