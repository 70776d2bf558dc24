"""The dataset -> loader contract (message.py): users iterate data keys only; control travels in WorkerMessage fields."""
from __future__ import annotations

import shutil
import warnings

import pytest
from torch.utils.data import DataLoader

from kitpkg.data.dataset import ShardDataset
from kitpkg.data.loader import ShardLoader
from kitpkg.data.message import WorkerMessage
from kitpkg.shards.manifest import load_manifest

DATA_KEYS = {"image", "target", "id"}


def _data_only(batches):
    for b in batches:
        assert set(b) == DATA_KEYS and not any(k.startswith("_") for k in b), f"not only data keys: {sorted(b)}"


def _flip_a_byte(manifest, tmp_path):
    """A copy of the shards with one byte of the 2nd sample's JPEG (of the first train shard) flipped."""
    folder = tmp_path / "shards"
    shutil.copytree(manifest.root, folder)
    m = load_manifest(str(folder))
    shard = next(s for s in m.shards if s.split == "train")
    path = m.path(shard)
    data = bytearray(open(path, "rb").read())
    pos = data.index(b"\xff\xd8\xff", shard.offsets[1]) + 100
    assert pos < shard.offsets[2]
    data[pos] ^= 0xFF
    open(path, "wb").write(bytes(data))
    return m, shard


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_hold_only_data_keys_and_damage_is_still_counted(any_manifest, tmp_path, workers):
    m, shard = _flip_a_byte(any_manifest, tmp_path)
    loader = ShardLoader(ShardDataset(m, "train", None, batch_size=4, seed=1), num_workers=workers)
    with pytest.warns(RuntimeWarning, match=f"skipped damaged sample.* in {shard.file}"):
        batches = list(loader)
    _data_only(batches)
    assert [d[:2] for d in loader.damaged] == [(shard.file, shard.offsets[1])], "one damaged sample, counted once"
    ids = [i for b in batches for i in b["id"]]
    assert shard.ids[1] not in ids and all(len(b["id"]) == 4 for b in batches[:-1]), "skipped, hole filled"


def test_plain_iteration_yields_data_batches_and_serve_yields_messages(tfrecord_manifest, tmp_path):
    m, shard = _flip_a_byte(tfrecord_manifest, tmp_path)
    ds = ShardDataset(m, "val", folds=[shard.fold], batch_size=4)
    with pytest.warns(RuntimeWarning, match=shard.file):  # no loader: the dataset reports the damage itself
        plain = list(ds)
    _data_only(plain)
    _data_only(DataLoader(ds, batch_size=None, num_workers=2))
    with ds.serve():
        messages = list(ds)
    assert all(isinstance(x, WorkerMessage) and x.error is None for x in messages)
    _data_only(x.batch for x in messages)
    assert [d[:2] for x in messages for d in x.damaged] == [(shard.file, shard.offsets[1])]
    assert [x.batch["id"] for x in messages] == [b["id"] for b in plain]
    with pytest.warns(RuntimeWarning, match=shard.file):
        first = next(iter(ds))
    assert ds.link is None and isinstance(first, dict), "outside serve() the dataset yields data again"
    strict = ShardDataset(m, "val", folds=[shard.fold], batch_size=4, strict=True)
    with strict.serve(), warnings.catch_warnings():
        warnings.simplefilter("error")
        last = list(strict)[-1]
    assert last.batch is None and shard.file in last.error, "an error is one message, and the epoch ends there"
