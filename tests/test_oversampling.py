"""data.sampling.class_weights: oversampling inside the partition -- the requested class ratio over an epoch, equal
batches per rank for every world size, a pure function of (seed, epoch, rank, worker), exact resume."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from kitpkg.config import config_from_dict
from kitpkg.data.dataset import ShardDataset, TrainOptions
from kitpkg.data.loader import ShardLoader
from kitpkg.data.partition import Partition, epoch_size, global_order
from kitpkg.errors import KitError

COUNTS = (13, 8, 21, 5)  # uneven shards
LABELS = np.random.default_rng(0).random(sum(COUNTS)) < 0.15  # ~15 % positives


def _weights(w_pos, w_neg=1.0):
    return tuple(float(w_pos if y else w_neg) for y in LABELS)


def _positives(stream):
    starts = np.concatenate([[0], np.cumsum(COUNTS)[:-1]])
    return int(LABELS[starts[stream[:, 0]] + stream[:, 1]].sum())


@pytest.mark.parametrize("w_pos, w_neg", [(4, 1), (2.5, 1), (3, 0.5)])
def test_an_epoch_holds_the_requested_class_ratio(w_pos, w_neg):
    weights = _weights(w_pos, w_neg)
    n_pos, n_neg = int(LABELS.sum()), int((~LABELS).sum())
    for epoch in range(3):
        stream = global_order(COUNTS, seed=5, epoch=epoch, window=16, weights=weights)
        assert len(stream) == epoch_size(weights), "the same number of samples every epoch"
        assert abs(_positives(stream) - w_pos * n_pos) <= 0.5 and abs(len(stream) - _positives(stream)
                                                                       - w_neg * n_neg) <= 0.5
    assert Partition(COUNTS, 4, weights=weights).epoch_total == epoch_size(weights)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("batch_size", [1, 4, 5])
def test_every_rank_has_the_same_batches(world_size, batch_size):
    weights = _weights(4)
    parts = [Partition(COUNTS, batch_size, seed=2, window=8, weights=weights, world_size=world_size, rank=r)
             for r in range(world_size)]
    assert len({len(p) for p in parts}) == 1
    for epoch in range(2):
        streams = [p.rank_stream(epoch) for p in parts]
        assert sum(map(len, streams)) == epoch_size(weights) - epoch_size(weights) % world_size
        total = Counter(map(tuple, np.concatenate(streams).tolist()))
        assert max(total.values()) <= 4, "a positive at most 4x, a negative at most once"


def test_pure_function_and_exact_resume():
    args = dict(seed=9, window=8, weights=_weights(2.5), world_size=2, rank=1)
    a, b = Partition(COUNTS, 4, **args), Partition(COUNTS, 4, **args)
    assert np.array_equal(a.rank_stream(3), b.rank_stream(3))
    assert not np.array_equal(a.rank_stream(0), a.rank_stream(1)), "each epoch its own draw"
    for workers in (1, 3):
        full = [(n, x.tolist()) for w in range(workers) for n, x in a.batches(1, 0, workers, w)]
        resumed = [(n, x.tolist()) for w in range(workers) for n, x in a.batches(1, 2, workers, w)]
        assert sorted(resumed) == sorted(i for i in full if i[0] >= 2)


@pytest.mark.parametrize("weight", [4, 0], ids=["oversampled", "left-out"])
def test_class_weights_repeat_or_leave_out_the_class_from_the_manifest_labels(tfrecord_manifest, weight):
    config = config_from_dict({"data": {"shards": "x", "sampling": {"class_weights": {1: weight}}}})
    plain = ShardDataset(tfrecord_manifest, "train", 0, batch_size=4, seed=1)
    weighted = ShardDataset(tfrecord_manifest, "train", 0, batch_size=4, seed=1,
                            train_options=TrainOptions(class_weights=config.data.sampling.class_weights))
    pos = sum(y == 1 for s in plain.sources for y in s.shard.labels)
    assert pos > 0 and weighted.epoch_samples == plain.epoch_samples + (weight - 1) * pos
    targets = Counter(int(t) for b in ShardLoader(weighted) for t in b["target"])
    assert targets[1] == weight * pos and targets[0] == plain.epoch_samples - pos  # weight 0: the class is left out
    val = ShardDataset(tfrecord_manifest, "val", 0, train_options=TrainOptions(class_weights={1: weight}))
    assert val.partition.weights is None, "eval: never"


def test_unknown_class_is_refused(tfrecord_manifest):
    with pytest.raises(KitError, match="data.sampling.class_weights: key 'melanoma' is no class"):
        ShardDataset(tfrecord_manifest, "train", 0, train_options=TrainOptions(class_weights={"melanoma": 4}))


def test_datamodule_states_the_epoch_size_once(tfrecord_manifest, fold_datamodule, capsys):
    config = config_from_dict({"data": {"shards": tfrecord_manifest.root, "image_size": 64, "batch_size": 4,
                                        "num_workers": 0, "sampling": {"class_weights": {"1": 2}}}})
    dm = fold_datamodule(config, 0)
    dm.train_dataloader(), dm.train_dataloader()
    out = capsys.readouterr().out
    assert out.count("an epoch holds") == 1 and f"holds {dm.train_dataloader().dataset.epoch_samples} " in out


def test_loader_resume_with_oversampling_is_exact(tfrecord_manifest):
    def loader():
        return ShardLoader(ShardDataset(tfrecord_manifest, "train", 1, batch_size=4, seed=3,
                                        train_options=TrainOptions(class_weights={1: 3})))

    reference = [b["id"] for b in loader()]
    first = loader()
    it = iter(first)
    taken = [next(it)["id"] for _ in range(5)]
    second = loader()
    second.load_state_dict(first.state_dict())
    assert taken + [b["id"] for b in second] == reference
