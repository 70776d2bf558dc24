"""ShardLoader: a DataLoader over a ShardDataset that knows its epoch and position and can resume mid-epoch exactly.

Lightning (2.x) treats a train dataloader with `state_dict`/`load_state_dict` as stateful and stores its state in the
checkpoint under "combined_loader". The state counts what the *trainer* took from `__iter__` in the main process (not
what workers prefetched): {"epoch", "samples" (consumed by this rank this epoch), "seed", "batch_size",
"world_size"}. Resuming re-derives the same rank stream (a pure function, see partition.py) and starts at the first
unconsumed batch, seeking with the manifest's offsets -- skipped samples are never read or decoded.

The dataset's iterators are made inside `ShardDataset.serve(pool)`, so they send one `WorkerMessage` per batch
(message.py): the data batch plus its control fields. This loader raises a message's `error` as one KitError, records
its `damaged` samples (`damaged`, one warning per shard), tracks its `ticket` and yields the data batch alone -- what
the trainer iterates holds only data keys ("image", "target", "id").

Workers write batches into recycled shared buffers (buffers.py); this loader tracks each batch it hands out and frees
its buffer when the batch's last reference in this process dies. To send a batch on to another process, clone it
first, or pass `recycle_buffers=False`.

Epochs: a new `iter()` starts the next epoch once the trainer took a batch from the one before (the first starts
`epoch`, default 0); an iteration it took nothing from is served again, from the same position. Lightning's restore
of a checkpoint written after an epoch's validation calls `iter()` for that finished epoch, takes nothing, then calls
it again for the next: counting calls would serve the epoch after. A loaded state is such an untouched iteration: the
next `iter()` continues the saved epoch, or starts the following one when the state was saved at the epoch's end.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

from torch.utils.data import DataLoader

from ..errors import KitError
from .buffers import BatchBuffers
from .dataset import ShardDataset
from .message import Damage, WorkerMessage, report_damage


class ShardLoader(DataLoader):
    """DataLoader(batch_size=None) over a ShardDataset, with exact state for mid-epoch resume."""

    def __init__(self, dataset: ShardDataset, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, prefetch_factor: Optional[int] = None, epoch: int = 0,
                 multiprocessing_context: Any = None, recycle_buffers: bool = True, **kwargs: Any):
        # Lightning re-creates loaders with sampler=None/batch_sampler=None (e.g. for predict): the dataset batches
        for key in ("sampler", "batch_sampler", "batch_size", "shuffle", "drop_last"):
            if kwargs.pop(key, None) not in (None, False):
                raise KitError(f"ShardLoader: {key} is not supported; the ShardDataset makes the batches")
        self.recycle_buffers = bool(recycle_buffers)
        self._buffers: Optional[BatchBuffers] = None  # made at the first iter(), with the workers' start method
        super().__init__(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers and num_workers > 0,
                         prefetch_factor=prefetch_factor if num_workers > 0 else None,
                         multiprocessing_context=multiprocessing_context, **kwargs)
        self.epoch, self.consumed = int(epoch), 0  # consumed = batches the trainer took this epoch
        self._first = 0  # the batch the latest iteration started at: consumed == _first means it handed out nothing
        self.samples = 0
        self.damaged: List[Damage] = []  # (shard, offset, reason) of every skipped sample
        self._warned: set = set()

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        if self.consumed != self._first:  # the trainer took batches of the latest iteration: on to the next epoch
            self.epoch, self.consumed = self.epoch + 1, 0
        epoch, start = self.epoch, self.consumed
        self._first = start
        self.samples = min(start * self.dataset.batch_size, self.dataset.partition.rank_samples())
        self.dataset.set_epoch(epoch, start)  # before the workers (re)start iterating
        if not (self.recycle_buffers and self.num_workers > 0):
            with self.dataset.serve():
                return self._count(super().__iter__())
        if self._buffers is None:
            # per worker: what the queue holds (prefetch) plus what the consumer keeps (Lightning's fetcher holds one
            # batch ahead); beyond that a worker allocates fresh buffers
            slots = (self.prefetch_factor or 2) + 4
            self._buffers = BatchBuffers(self.num_workers, slots, self.multiprocessing_context)
        self._buffers.new_generation()
        with self.dataset.serve(self._buffers):  # rides to the workers this iter() starts (persistent ones have it)
            batches = super().__iter__()  # persistent workers: batches of an abandoned iteration are drained by now
        self._buffers.reclaim(stale=True)
        return self._count(batches)

    def _count(self, messages: Iterator[WorkerMessage]) -> Iterator[Dict[str, Any]]:
        for message in messages:
            if message.error is not None:
                raise KitError(message.error)
            report_damage(message.damaged, self.damaged, self._warned)
            batch = message.batch
            if message.ticket is not None and self._buffers is not None:
                self._buffers.track(batch["image"], message.ticket)
            self.consumed += 1
            self.samples += len(batch["id"])
            yield batch

    def state_dict(self) -> Dict[str, Any]:
        """Where the trainer is: epoch and samples consumed this epoch (plus the settings the order depends on)."""
        part = self.dataset.partition
        return {"epoch": self.epoch, "samples": self.samples, "seed": part.seed, "batch_size": part.batch_size,
                "world_size": part.world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Make the next `iter()` (and any that the trainer takes nothing from) continue exactly where the state was
        saved."""
        part = self.dataset.partition
        for key in ("seed", "batch_size", "world_size"):
            if key in state and state[key] != getattr(part, key):
                raise KitError(f"checkpoint loader state has {key}={state[key]} but this run has {key}="
                               f"{getattr(part, key)}; resume with the same {key} (the sample order depends on it) "
                               "or start a new run")
        epoch, start = int(state["epoch"]), -(-int(state["samples"]) // part.batch_size)
        if start >= len(part) and len(part):
            epoch, start = epoch + 1, 0  # saved at the end of an epoch: continue with the next one
        self.epoch, self.consumed, self._first = epoch, start, start
