"""The dataset -> loader contract: what a ShardDataset iterator sends to a ShardLoader, one message per batch.

A ShardLoader starts its workers inside `ShardDataset.serve(pool)`; iterators made then (in the workers, or in the
main process with num_workers=0) yield `WorkerMessage`s instead of plain batches. The loader raises `error`, records
`damaged`, tracks `ticket` (buffers.py) and yields `batch` alone, so what a user iterates holds only data keys.
Outside `serve()` (a plain `DataLoader(dataset, batch_size=None)`, or `iter(dataset)`) the dataset yields the data
batches directly, raises its errors and warns about damage itself.

Data keys (`WorkerMessage.batch`): "image" (uint8 B×3×H×W), "target", "id". A new
per-sample column is one more data key built in `ShardDataset._columns` (e.g. "meta": the selected manifest columns
as a B×k tensor); control information is one more field here, never a key of the batch.

A NamedTuple on purpose: torch's `default_convert` (run in the worker) and `pin_memory` (run by the loader) rebuild
named tuples field by field, so pinning reaches `batch` and the message keeps its type.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .buffers import BatchBuffers, Ticket

Damage = Tuple[str, int, str]  # (shard file, byte offset, reason) of one skipped sample


class WorkerMessage(NamedTuple):
    """One batch from a dataset iterator to its ShardLoader: data plus control."""

    batch: Optional[Dict[str, Any]]  # data keys only; None when `error` is set
    ticket: Optional[Ticket] = None  # the recycled buffer `batch["image"]` lives in (None: a fresh tensor)
    damaged: Tuple[Damage, ...] = ()  # samples skipped while making this batch
    error: Optional[str] = None  # a KitError/OSError in the iterator, as one line: the epoch ends there


@dataclass(frozen=True)
class LoaderLink:
    """What a ShardLoader gives its dataset while it starts iterators (`ShardDataset.serve`); they keep it."""

    pool: Optional[BatchBuffers] = None  # recycled batch buffers for worker processes (None: fresh tensors)


def report_damage(damaged: Iterable[Damage], log: List[Damage], warned: Set[str]) -> None:
    """Append `damaged` to `log` and warn once per shard not yet in `warned` (the count is in `log`)."""
    for shard, offset, reason in damaged:
        log.append((shard, int(offset), reason))
        if shard not in warned:
            warned.add(shard)
            warnings.warn(f"kitpkg: skipped damaged sample(s) in {shard}: {reason} at offset {offset}",
                          RuntimeWarning, stacklevel=3)
