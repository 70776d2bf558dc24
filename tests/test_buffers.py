"""Recycled batch buffers: a buffer is reused only once every reference to its batch is gone; batches stay right."""
import os

import pytest
import torch

from kitpkg.data import buffers as B
from kitpkg.data.dataset import ShardDataset
from kitpkg.data.loader import ShardLoader


def _dataset(manifest, **kw):
    return ShardDataset(manifest, "train", 1, batch_size=2, image_size=24, seed=4, **kw)


def _reference(manifest, epochs):
    """Every epoch's batches from an in-process loader (no workers, no shared buffers)."""
    loader = ShardLoader(_dataset(manifest))
    return [[(b["id"], b["image"].clone()) for b in loader] for _ in range(epochs)]


def _same(got, ref):
    assert [ids for ids, _ in got] == [ids for ids, _ in ref]
    for (ids, a), (_, b) in zip(got, ref):
        assert torch.equal(a, b), f"batch {ids} changed after it was handed out"


@pytest.fixture
def tickets(monkeypatch):
    """The buffer tickets the main process saw, in order."""
    seen = []
    track = B.BatchBuffers.track

    def spy(self, tensor, ticket):
        seen.append(tuple(ticket))
        return track(self, tensor, ticket)
    monkeypatch.setattr(B.BatchBuffers, "track", spy)
    return seen


def test_batches_the_consumer_keeps_are_never_overwritten(any_manifest, tickets):
    ref = _reference(any_manifest, 2)
    loader = ShardLoader(_dataset(any_manifest), num_workers=2, persistent_workers=True)
    kept, views = [], []
    for _ in range(2):
        for i, b in enumerate(loader):
            if i % 2:  # keep the whole batch
                kept.append((b["id"], b["image"]))
            else:  # keep only a numpy view of one image: it must pin the buffer too
                views.append((b["id"], b["image"][0].numpy()))
    assert tickets, "workers under a ShardLoader write into recycled buffers"
    flat = [x for epoch in ref for x in epoch]
    _same(kept, [x for i, x in enumerate(flat) if i % len(ref[0]) % 2])
    want = {tuple(ids): img[0] for ids, img in flat}
    for ids, view in views:
        assert torch.equal(torch.from_numpy(view), want[tuple(ids)]), f"batch {ids} changed under a numpy view"


def test_released_batches_recycle_a_few_buffers(any_manifest, tickets):
    ref = _reference(any_manifest, 3)
    loader = ShardLoader(_dataset(any_manifest), num_workers=2, persistent_workers=True)
    got = [[(b["id"], b["image"].clone()) for b in loader] for _ in range(3)]
    for epoch, want in zip(got, ref):
        _same(epoch, want)
    batches = sum(len(e) for e in got)
    slots = {(w, s) for _, w, s, _ in tickets}
    assert len(tickets) == batches, "every batch came in a recycled buffer"
    assert len(slots) <= 2 * loader._buffers.slots < batches, "buffers were reused, not allocated per batch"


def test_an_abandoned_epoch_never_corrupts_what_was_handed_out(tfrecord_manifest, tickets):
    ref = _reference(tfrecord_manifest, 2)
    loader = ShardLoader(_dataset(tfrecord_manifest), num_workers=2, persistent_workers=True)
    it = iter(loader)
    partial = [(b["id"], b["image"]) for b, _ in zip(it, range(3))]  # workers have more in flight
    full = [(b["id"], b["image"]) for b in loader]  # the next epoch: the in-flight batches are drained
    _same(partial, ref[0][:3])
    _same(full, ref[1])
    # everything is kept, so each of the 2 x 6 buffers carries one batch: the ones taken by batches in flight when
    # the epoch was abandoned (drained, never handed out) were freed for the next epoch
    assert len(tickets) == 2 * loader._buffers.slots < 3 + len(ref[1])


def test_spawned_workers_get_the_pool_and_the_users_worker_init(tfrecord_manifest, tmp_path, tickets):
    ref = _reference(tfrecord_manifest, 1)[0]
    init = _MarkWorker(str(tmp_path))
    loader = ShardLoader(_dataset(tfrecord_manifest), num_workers=2, multiprocessing_context="spawn",
                         worker_init_fn=init)
    _same([(b["id"], b["image"].clone()) for b in loader], ref)
    assert sorted(os.listdir(tmp_path)) == ["worker0", "worker1"]
    assert len(tickets) == len(ref)
    # the pool does not ride on worker_init_fn: Lightning only adds its per-rank worker seeding when that is None
    assert loader.worker_init_fn is init and ShardLoader(loader.dataset, num_workers=2).worker_init_fn is None


class _MarkWorker:
    def __init__(self, folder):
        self.folder = folder

    def __call__(self, worker_id):
        open(os.path.join(self.folder, f"worker{worker_id}"), "w").close()


def test_two_loaders_over_one_dataset_and_copies_stay_correct(tfrecord_manifest, tickets):
    import copy
    import pickle

    ref = _reference(tfrecord_manifest, 3)
    ds = _dataset(tfrecord_manifest)
    a = ShardLoader(ds, num_workers=2, persistent_workers=True)
    b = ShardLoader(ds, num_workers=2)
    kept = []
    for loader in (a, b, a, b):  # a: epochs 0, 1; b: epochs 0, 1 -- every batch kept
        kept.append([(x["id"], x["image"]) for x in loader])
    for got, want in zip(kept, [ref[0], ref[0], ref[1], ref[1]]):
        _same(got, want)
    assert {t[0] for t in tickets} == {a._buffers.token, b._buffers.token}
    assert ds.link is None, "the pool rides on the dataset only while a loader starts its workers"
    seen = len(tickets)
    for clone in (copy.deepcopy(b), pickle.loads(pickle.dumps(b))):  # copies (Lightning's XLA launcher deepcopies)
        assert clone._buffers.lock is None, "a copied pool never recycles: its lock would not reach the workers"
        _same([(x["id"], x["image"]) for x in clone], ref[2])
    assert len(tickets) == seen


def test_without_recycling_a_batch_can_be_sent_to_another_process(tfrecord_manifest, tickets):
    loader = ShardLoader(_dataset(tfrecord_manifest), num_workers=2, recycle_buffers=False)
    _same([(x["id"], x["image"]) for x in loader], _reference(tfrecord_manifest, 1)[0])
    assert tickets == [], "recycle_buffers=False: every batch in a fresh buffer"


def _forked_copy(pool):
    """The pool as a forked DataLoader worker sees it: the same shared tensors and lock, its own local state."""
    worker = B.BatchBuffers.__new__(B.BatchBuffers)
    worker.__dict__.update(pool.__dict__)
    worker._init_local()
    return worker


def test_protocol_frees_a_buffer_only_when_its_batch_is_dead_or_stale():
    pool = B.BatchBuffers(workers=1, slots=2)
    worker = _forked_copy(pool)
    pool.new_generation()
    worker.install(0)
    worker.begin_iteration()
    (s1, t1), (_, t2) = worker.take(100), worker.take(50)
    assert t1[1:3] != t2[1:3] and worker.take(10) is None, "two slots, both taken: the next batch gets a fresh buffer"
    batch = B.view_as(B.shared_empty(100), (10, 10), torch.uint8)  # the main process's own mapping of s1
    view = batch[3]
    pool.track(batch, t1)
    del batch
    pool.reclaim(stale=True)
    assert pool.tickets[0, t1[2]] != 0, "a live view keeps the buffer"
    del view
    pool.reclaim()
    assert pool.tickets[0, t1[2]] == 0, "freed once the last reference died"
    assert pool.tickets[0, t2[2]] != 0, "the untracked (in-flight) batch of the current generation stays taken"
    reused, t3 = worker.take(100)
    assert reused.data_ptr() == s1.data_ptr(), "the freed buffer is reused"
    pool.new_generation()
    assert worker.take(10) is None, "a worker of an abandoned iteration never takes a buffer"
    pool.reclaim(stale=True)
    assert not pool.tickets.any(), "stale tickets never handed out are freed after the drain"
