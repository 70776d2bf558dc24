"""The sample partition is a pure function: checked over grids of sizes without starting any process."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from kitpkg.data.partition import Partition, global_order, read_runs

COUNTS = [(), (0,), (1,), (7,), (8, 8, 8), (5, 0, 13, 2), (31, 1, 17, 9, 4), tuple(range(1, 12))]


def _dataloader_order(per_worker):
    """The order a torch DataLoader returns results: round-robin over workers, skipping finished ones."""
    queues, out = [list(q) for q in per_worker], []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _seen(part, epoch, workers, start=0):
    per_worker = [list(part.batches(epoch, start, workers, w)) for w in range(max(workers, 1))]
    return _dataloader_order(per_worker)


def _keys(arr):
    return [tuple(x) for x in np.asarray(arr).reshape(-1, 2).tolist()]


@pytest.mark.parametrize("counts", COUNTS)
def test_training_split_is_equal_per_rank_exclusive_and_drops_under_world_size(counts):
    total = sum(counts)
    for world, workers, epoch, bs, drop_last in itertools.product((1, 2, 3, 4), (0, 1, 2, 3), (0, 1, 2), (1, 3, 8),
                                                                  (False, True)):
        parts = [Partition(counts, bs, seed=7, window=5, world_size=world, rank=r, drop_last=drop_last)
                 for r in range(world)]
        lengths = {len(p) for p in parts}
        assert len(lengths) == 1, "every rank must yield the same number of batches (no DDP hang)"
        taken = []
        for p in parts:
            seen = _seen(p, epoch, workers)
            assert [b for b, _ in seen] == list(range(len(p))), "the DataLoader must see batches in stream order"
            assert all(len(batch) == bs for _, batch in seen[:-1])
            got = np.concatenate([batch for _, batch in seen]) if seen else np.zeros((0, 2))
            stream = p.rank_stream(epoch)
            assert np.array_equal(got, stream[:len(got)])
            taken += _keys(got)
        assert len(taken) == len(set(taken)), "no sample repeats within an epoch"
        dropped = total - len(taken)
        assert dropped <= world - 1 + (world * (bs - 1) if drop_last else 0)
        if not drop_last:
            assert dropped == total % world


@pytest.mark.parametrize("counts", COUNTS)
def test_eval_split_covers_every_sample_once_in_manifest_order(counts):
    expected = [(s, i) for s, n in enumerate(counts) for i in range(n)]
    for world, workers, bs in itertools.product((1, 2, 3, 5), (0, 1, 2, 3), (1, 4, 64)):
        got = []
        for r in range(world):
            p = Partition(counts, bs, shuffle=False, even=False, world_size=world, rank=r)
            seen = _seen(p, epoch=3, workers=workers)
            assert len(seen) == len(p)
            got += _keys(np.concatenate([b for _, b in seen])) if seen else []
        assert got == expected


@pytest.mark.parametrize("counts", [(5, 0, 13, 2), (31, 1, 17, 9, 4)])
def test_resume_is_the_same_stream_without_the_consumed_batches(counts):
    for world, workers, epoch, bs in itertools.product((1, 2, 3), (0, 1, 2, 3), (0, 4), (1, 3, 8)):
        for r in range(world):
            p = Partition(counts, bs, seed=3, window=6, world_size=world, rank=r)
            full = _seen(p, epoch, workers=2)
            for start in range(len(p) + 1):
                resumed = _seen(p, epoch, workers, start)
                assert [b for b, _ in resumed] == [b for b, _ in full[start:]]
                for (_, a), (_, b) in zip(resumed, full[start:]):
                    assert np.array_equal(a, b)


def test_order_is_deterministic_per_seed_and_epoch_and_changes_between_epochs():
    counts = (40, 25, 33, 12)
    a = global_order(counts, seed=1, epoch=0, window=16)
    assert np.array_equal(a, global_order(counts, seed=1, epoch=0, window=16))
    assert not np.array_equal(a, global_order(counts, seed=1, epoch=1, window=16))
    assert not np.array_equal(a, global_order(counts, seed=2, epoch=0, window=16))
    assert sorted(_keys(a)) == [(s, i) for s, n in enumerate(counts) for i in range(n)]
    assert _keys(global_order(counts, shuffle=False)) == [(s, i) for s, n in enumerate(counts) for i in range(n)]


def test_window_keeps_shuffling_local_to_consecutive_blocks_of_the_shard_stream():
    counts = (30, 30, 30, 30, 30, 30)
    for epoch, per_window in itertools.product(range(3), (1, 2)):
        window = 30 * per_window
        shuffled = global_order(counts, seed=5, epoch=epoch, window=window)
        for lo in range(0, len(shuffled), window):
            block = shuffled[lo:lo + window]
            shards = sorted(set(block[:, 0].tolist()))
            assert len(shards) == per_window, "a window holds whole consecutive shards, nothing from elsewhere"
            assert sorted(_keys(block)) == [(s, i) for s in shards for i in range(30)]
            assert not np.array_equal(block[:, 1], np.sort(block[:, 1])), "samples are shuffled inside a window"


def test_read_runs_groups_by_shard_in_file_order_and_keeps_positions():
    batch = np.array([[2, 5], [0, 3], [2, 1], [0, 0], [1, 9]])
    assert read_runs(batch) == [(0, [3, 1]), (1, [4]), (2, [2, 0])]


def test_bad_partition_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        Partition((4,), 2, world_size=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        Partition((4,), 0)
    with pytest.raises(ValueError, match="worker_id"):
        list(Partition((4,), 2).batches(0, 0, 2, 2))


def test_training_never_yields_a_batch_of_one_the_lone_sample_joins_the_batch_before():
    # BatchNorm cannot train on one sample: a fold of 2k+1 samples at batch size k would end with a batch of one
    for n, bs, world in itertools.product((5, 9, 17, 33), (2, 4, 8, 16), (1, 2)):
        parts = [Partition((n,), bs, seed=1, world_size=world, rank=r) for r in range(world)]
        assert len({len(p) for p in parts}) == 1
        for p in parts:
            seen = _seen(p, epoch=0, workers=2)
            sizes = [len(batch) for _, batch in seen]
            assert 1 not in sizes or p.rank_samples() == 1, (n, bs, world, sizes)
            assert sum(sizes) == p.rank_samples(), "the lone sample is kept, not dropped"
            if p.rank_samples() % bs == 1 and p.rank_samples() > bs:
                assert sizes[-1] == bs + 1 and all(s == bs for s in sizes[:-1])
    eval_part = Partition((9,), 4, shuffle=False, even=False)
    assert [len(b) for _, b in eval_part.batches(0)] == [4, 4, 1], "eval keeps exactly-once batches as they are"
