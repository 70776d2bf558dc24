"""Which samples each (epoch, rank, worker) reads: a pure function of shard sizes, seed and position.

Training order (``even=True``):
  1. shards are permuted by a generator seeded with (seed, epoch);
  2. their samples are concatenated in file order and shuffled inside consecutive windows of ``window`` samples
     (a window of 0 or >= the dataset shuffles everything) -- the window trades randomness for read locality;
     with per-sample ``weights`` (oversampling: `data.sampling.class_weights`) a sample of weight w appears
     floor(w) times, plus once more for round(frac(w) * n) of the n samples sharing that weight, drawn from
     (seed, epoch) -- before the window shuffle, so its copies land in one window. An epoch then holds
     `epoch_total` samples, the same every epoch;
  3. the stream is dealt round-robin to ranks and every rank keeps ``N // world_size`` samples, so the last
     ``N % world_size`` (at most world_size - 1, a different tail each epoch) are dropped and every rank has the same
     number of batches: DDP never waits for a rank that ran out;
  4. each rank's stream is cut into batches, and batch ``b`` goes to DataLoader worker ``b % num_workers``: the
     DataLoader takes results round-robin from its workers, so the trainer sees the rank's batches in stream order
     whatever the number of workers;
  5. never a training batch of one (BatchNorm cannot train on it): when a rank's last batch would hold a single
     sample (``n % batch_size == 1``, ``n > batch_size``), that sample joins the batch before, which then holds
     ``batch_size + 1``. Only the epoch's last batch can differ in size, so a position of ``k`` consumed batches is
     still ``k * batch_size`` samples. (``batch_size=1``, or a rank with one sample, still yields batches of one.)
Eval order (``even=False``): the selected shards in manifest order, split into contiguous, possibly uneven blocks
across ranks -- every sample exactly once, nothing dropped or padded.
Resuming after ``k`` consumed batches is the same stream with its first ``k`` batches left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np


def global_order(counts: Sequence[int], seed: int = 0, epoch: int = 0, shuffle: bool = True,
                 window: int = 0, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """The whole epoch's sample stream as an (N, 2) array of (shard index, sample index); `weights`: rule 2."""
    counts = np.asarray(counts, dtype=np.int64)
    shards = np.arange(len(counts))
    rng = np.random.default_rng([int(seed), int(epoch)]) if shuffle else None
    if rng is not None:
        shards = rng.permutation(shards)
    if not len(shards) or not counts.sum():
        return np.zeros((0, 2), dtype=np.int64)
    stream = np.concatenate([np.stack([np.full(counts[s], s), np.arange(counts[s])], 1) for s in shards])
    if weights is not None:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        w = np.asarray(weights, dtype=np.float64)[starts[stream[:, 0]] + stream[:, 1]]
        stream = np.repeat(stream, _copies(w, np.random.default_rng([int(seed), int(epoch), 1])), axis=0)
    if rng is not None:
        size = len(stream) if window <= 0 else int(window)
        for lo in range(0, len(stream), size):
            stream[lo:lo + size] = stream[lo:lo + size][rng.permutation(min(size, len(stream) - lo))]
    return stream


def _copies(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How often each sample of weight `w` appears in an epoch (rule 2)."""
    copies = np.floor(w).astype(np.int64)
    frac = w - copies
    for f in np.unique(frac[frac > 0]):
        group = np.flatnonzero(frac == f)
        copies[rng.choice(group, int(round(f * len(group))), replace=False)] += 1
    return copies


def epoch_size(weights: Sequence[float]) -> int:
    """Samples an epoch holds with per-sample `weights` (rule 2): the same whatever the seed and epoch."""
    w = np.asarray(weights, dtype=np.float64)
    frac = w - np.floor(w)
    return int(np.floor(w).sum()) + sum(int(round(f * np.sum(frac == f))) for f in np.unique(frac[frac > 0]))


def rank_slice(n: int, world_size: int, rank: int, even: bool) -> Tuple[slice, int]:
    """Which part of an n-sample global stream a rank reads: (slice, length); see the module docstring."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if even:
        length = n // world_size
        return slice(rank, rank + length * world_size, world_size), length
    bounds = [n * r // world_size for r in range(world_size + 1)]
    return slice(bounds[rank], bounds[rank + 1]), bounds[rank + 1] - bounds[rank]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches made from n samples."""
    return n // batch_size if drop_last else -(-n // batch_size)


@dataclass(frozen=True)
class Partition:
    """The sample assignment for one rank of one selection of shards (``counts`` = samples per shard)."""

    counts: Tuple[int, ...]
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    window: int = 4096
    even: bool = True  # training: equal batches per rank (drops <= world_size - 1); eval: exactly once, uneven
    drop_last: bool = False
    world_size: int = 1
    rank: int = 0
    weights: Optional[Tuple[float, ...]] = None  # per sample, shards concatenated in `counts` order: rule 2

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        rank_slice(0, self.world_size, self.rank, self.even)  # validates rank
        if self.weights is not None and len(self.weights) != self.total:
            raise ValueError(f"weights has {len(self.weights)} entries for {self.total} samples")

    @property
    def total(self) -> int:
        """Samples in the selected shards."""
        return int(sum(self.counts))

    @cached_property  # per batch (`bounds` via len): with weights an O(N) count, so once per Partition
    def epoch_total(self) -> int:
        """Samples an epoch's stream holds before the split across ranks (`total`, or more/less when oversampled)."""
        return self.total if self.weights is None else epoch_size(self.weights)

    def rank_samples(self) -> int:
        """Samples this rank reads per epoch."""
        return rank_slice(self.epoch_total, self.world_size, self.rank, self.even)[1]

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        n = self.rank_samples()
        return num_batches(n, self.batch_size, self.drop_last) - (1 if self._lone_tail(n) else 0)

    def _lone_tail(self, n: int) -> bool:
        """True when the last training batch would hold one sample, which then joins the batch before (rule 5)."""
        return self.even and not self.drop_last and self.batch_size > 1 and n > self.batch_size \
            and n % self.batch_size == 1

    def bounds(self, b: int) -> Tuple[int, int]:
        """[start, end) of batch `b` in the rank stream."""
        end = (b + 1) * self.batch_size
        if b == len(self) - 1 and self._lone_tail(self.rank_samples()):
            end += 1
        return b * self.batch_size, end

    def rank_stream(self, epoch: int) -> np.ndarray:
        """This rank's (shard, sample) stream for an epoch, in the order the trainer sees it."""
        order = global_order(self.counts, self.seed, epoch, self.shuffle, self.window, self.weights)
        return order[rank_slice(len(order), self.world_size, self.rank, self.even)[0]]

    def batches(self, epoch: int, start_batch: int = 0, num_workers: int = 1, worker_id: int = 0,
                stream: Optional[np.ndarray] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield (batch number, (k, 2) array) for the batches a worker makes, from batch `start_batch` on.

        `stream` is `rank_stream(epoch)` when the caller already has it (it is derived, never different).
        """
        if not 0 <= worker_id < max(num_workers, 1):
            raise ValueError(f"worker_id {worker_id} is outside num_workers {num_workers}")
        stream = self.rank_stream(epoch) if stream is None else stream
        for b in range(start_batch + worker_id, len(self), max(num_workers, 1)):
            lo, hi = self.bounds(b)
            yield b, stream[lo:hi]


def read_runs(batch: np.ndarray) -> List[Tuple[int, List[int]]]:
    """Group a batch's samples by shard in file order: [(shard, [positions in the batch])], for sequential reads."""
    order = np.lexsort((batch[:, 1], batch[:, 0]))
    runs: List[Tuple[int, List[int]]] = []
    for pos in order.tolist():
        shard = int(batch[pos, 0])
        if not runs or runs[-1][0] != shard:
            runs.append((shard, []))
        runs[-1][1].append(pos)
    return runs
