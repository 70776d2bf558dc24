"""ShardDataset on real shards (kitpkg convert, and foreign ones written by TensorFlow and webdataset, then indexed):
fold selection, exact eval order with ids, worker/rank splits, decoding and the CPU stage, damage, http sources."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import simplejpeg
import torch
from torch.utils.data import DataLoader

from kitpkg.data.dataset import ShardDataset, TrainOptions
from kitpkg.data.loader import ShardLoader
from kitpkg.errors import KitError
from kitpkg.shards.manifest import load_manifest


def _ids(loader):
    return [i for b in loader for i in b["id"]]


def _eval_ids(manifest, split, fold=None, folds=None):
    from kitpkg.data.dataset import select_shards

    return [i for s in select_shards(manifest, split, fold, folds) for i in manifest.shards[s].ids]


@pytest.mark.parametrize("fold", [0, 2])
def test_folds_select_train_val_test(any_manifest, fold):
    m = any_manifest
    train = ShardDataset(m, "train", fold, batch_size=7)
    val = ShardDataset(m, "val", fold, batch_size=7)
    test = ShardDataset(m, "test", batch_size=7)
    fold_of = m.fold_of()
    train_ids, val_ids, test_ids = _ids(ShardLoader(train)), _ids(ShardLoader(val)), _ids(ShardLoader(test))
    assert {fold_of[i] for i in train_ids} == set(m.folds()) - {fold}
    assert sorted(train_ids) == sorted(i for i, k in fold_of.items() if k != fold)
    assert val_ids == _eval_ids(m, "val", fold), "eval order is the manifest order"
    assert {fold_of[i] for i in val_ids} == {fold}
    assert sorted(test_ids) == sorted(i for s in m.select("test") for i in s.ids) and len(test_ids) == 10
    assert len(train_ids) + len(val_ids) == 48
    with pytest.raises(KitError, match="fold=9"):
        ShardDataset(m, "val", 9)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_is_exactly_once_in_manifest_order_across_ranks_and_real_workers(any_manifest, world):
    expected = _eval_ids(any_manifest, "train", folds=[0, 1, 2])
    got, targets = [], []
    for rank in range(world):
        ds = ShardDataset(any_manifest, "val", folds=[0, 1, 2], batch_size=4, world_size=world, rank=rank)
        batches = list(ShardLoader(ds, num_workers=2))
        assert len(batches) == len(ds)
        got += [i for b in batches for i in b["id"]]
        targets += [t for b in batches for t in b["target"].tolist()]
    assert got == expected
    labels = {i: v for s in any_manifest.select("train") for i, v in zip(s.ids, s.labels or [])}
    if labels:
        assert targets == [labels[i] for i in got]


def test_training_order_same_with_real_workers_equal_per_rank_no_repeats(any_manifest):
    ref = [b["id"] for b in ShardLoader(ShardDataset(any_manifest, "train", 1, batch_size=3, seed=5))]
    workers = [b["id"] for b in ShardLoader(ShardDataset(any_manifest, "train", 1, batch_size=3, seed=5),
                                            num_workers=2, persistent_workers=True)]
    assert workers == ref, "the batch sequence does not depend on the number of workers"
    plain = DataLoader(ShardDataset(any_manifest, "train", 1, batch_size=3, seed=5), batch_size=None, num_workers=2)
    assert [b["id"] for b in plain] == ref, "a plain DataLoader(batch_size=None) works too"
    n = sum(map(len, ref))
    for world in (2, 3, 4):
        per_rank = [[b["id"] for b in ShardLoader(ShardDataset(any_manifest, "train", 1, batch_size=3, seed=5,
                                                               world_size=world, rank=r), num_workers=2)]
                    for r in range(world)]
        assert len({len(p) for p in per_rank}) == 1, "equal batch counts: DDP cannot hang"
        seen = [i for p in per_rank for b in p for i in b]
        assert len(seen) == len(set(seen)) and n - len(seen) == n % world < world


def test_images_are_the_stored_jpegs_decoded_and_resized(tfrecord_manifest):
    from kitpkg.shards.reader import iter_manifest_shard

    m = tfrecord_manifest
    stored = {r.id: simplejpeg.decode_jpeg(r.image, "RGB") for s in range(len(m.shards))
              for r in iter_manifest_shard(m, s)}
    batch = next(iter(ShardLoader(ShardDataset(m, "test", batch_size=4))))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 64, 64)
    for img, i in zip(batch["image"], batch["id"]):
        assert np.array_equal(img.permute(1, 2, 0).numpy(), stored[i])
    big = next(iter(ShardLoader(ShardDataset(m, "test", batch_size=4, image_size=(48, 80)))))
    assert big["image"].shape == (4, 3, 48, 80)


def test_the_cpu_stage_changes_training_pixels_only_the_same_with_workers(tfrecord_manifest):
    import albumentations as A

    m, flip = tfrecord_manifest, TrainOptions(augment=A.Compose([A.HorizontalFlip(p=1.0)]))

    def first(split, fold, workers=0, **kw):
        return next(iter(ShardLoader(ShardDataset(m, split, fold, batch_size=4, seed=1, **kw), num_workers=workers)))
    plain, flipped = first("train", 0), first("train", 0, train_options=flip)
    assert plain["id"] == flipped["id"] and torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(first("train", 0, workers=2, train_options=flip)["image"], flipped["image"])
    assert torch.equal(first("val", 0, train_options=flip)["image"], first("val", 0)["image"]), "training only"


def _damaged_copy(manifest, tmp_path, shard_index, how):
    folder = tmp_path / "shards"
    shutil.copytree(manifest.root, folder)
    m = load_manifest(str(folder))
    shard = m.shards[shard_index]
    path = m.path(shard)
    data = bytearray(open(path, "rb").read())
    if how == "flip":  # one byte inside the 2nd record's payload
        pos = shard.offsets[1] + (shard.offsets[2] - shard.offsets[1]) // 2
        data[pos] ^= 0xFF
    else:  # cut the file in the middle of its 3rd sample
        data = data[:shard.offsets[2] + 600]  # inside sample 2's image bytes
    open(path, "wb").write(bytes(data))
    return m, shard


def test_crc_damage_is_skipped_with_a_warning_and_count_or_raises_in_strict(tfrecord_manifest, tmp_path):
    m, shard = _damaged_copy(tfrecord_manifest, tmp_path, 0, "flip")
    ds = ShardDataset(m, "val", folds=[shard.fold], batch_size=4)
    loader = ShardLoader(ds, num_workers=2)
    with pytest.warns(RuntimeWarning, match=f"{shard.file}: corrupted record data .*at offset {shard.offsets[1]}"):
        ids = _ids(loader)
    assert loader.damaged == [(shard.file, shard.offsets[1], "corrupted record data (CRC mismatch)")]
    assert ids == [i for i in _eval_ids(m, "val", shard.fold) if i != shard.ids[1]]
    strict = ShardLoader(ShardDataset(m, "val", folds=[shard.fold], batch_size=4, strict=True), num_workers=2)
    with pytest.raises(KitError, match=f"{shard.file}: corrupted record data .*at offset {shard.offsets[1]}"):
        _ids(strict)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_truncated_shard_keeps_batch_sizes_and_equal_batch_counts_per_rank(any_manifest, tmp_path, world):
    m, shard = _damaged_copy(any_manifest, tmp_path, 3, "truncate")
    lost = set(shard.ids[2:])
    counts, seen, streamed = set(), [], set()
    for rank in range(world):
        ds = ShardDataset(m, "train", None, batch_size=4, seed=2, world_size=world, rank=rank)
        streamed |= {ds.sources[s].shard.ids[i] for s, i in ds.partition.rank_stream(0)}
        loader = ShardLoader(ds, num_workers=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(loader)
        counts.add(len(batches))
        assert all(len(b["id"]) == 4 for b in batches[:-1]), "holes are filled: batches keep their size"
        assert {d[0] for d in loader.damaged} <= {shard.file}
        assert all(shard.file in str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
        seen += [i for b in batches for i in b["id"]]
    assert len(counts) == 1, "every rank still yields the same number of batches"
    assert set(seen) == streamed - lost, "only the truncated tail is missing"


def test_shards_over_http_read_like_local(tfrecord_manifest):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tfrecord_manifest.root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/manifest.json"
        remote = ShardDataset(url, "train", 2, batch_size=5, seed=4)
        local = ShardDataset(tfrecord_manifest, "train", 2, batch_size=5, seed=4)
        assert [b["id"] for b in ShardLoader(remote, num_workers=2)] == [b["id"] for b in ShardLoader(local)]
    finally:
        server.shutdown()
        server.server_close()


_TF_WRITER = r"""
import os, sys, tensorflow as tf
src, out = sys.argv[1], sys.argv[2]
names = sorted(n for n in os.listdir(src) if n.endswith(".jpg"))[:26]
def feats(n, label):
    f = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[open(os.path.join(src, n), "rb").read()])),
         "image_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[n.rsplit(".", 1)[0].encode()]))}
    if label is not None:
        f["target"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()
for sub, opts in (("plain", None), ("gzip", "GZIP")):
    os.makedirs(os.path.join(out, sub))
    for name, chunk, labeled in (("train00-8.tfrec", names[:8], 1), ("train01-8.tfrec", names[8:16], 1),
                                 ("train02-5.tfrec", names[16:21], 1), ("test00-5.tfrec", names[21:26], 0)):
        with tf.io.TFRecordWriter(os.path.join(out, sub, name), options=opts) as w:
            for i, n in enumerate(chunk):
                w.write(feats(n, i % 2 if labeled else None))
"""


@pytest.fixture(scope="module")
def foreign_manifests(tmp_path_factory, demo_source):
    """TFRecords written by TensorFlow (plain and GZIP) and tars by webdataset's TarWriter, indexed by kitpkg."""
    import webdataset as wds

    from kitpkg.shards.index import index

    out = tmp_path_factory.mktemp("foreign")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", _TF_WRITER, str(demo_source.images / "train"), str(out)], check=True, env=env,
                   timeout=180)
    src = demo_source.images / "train"
    names = sorted(n for n in os.listdir(src) if n.endswith(".jpg"))[:26]
    assert len(names) == 26
    os.makedirs(out / "wds")
    for k, chunk in enumerate((names[:8], names[8:16], names[16:21])):
        with wds.TarWriter(str(out / "wds" / f"train-{k}.tar")) as w:
            for i, n in enumerate(chunk):
                w.write({"__key__": n.rsplit(".", 1)[0], "jpg": open(src / n, "rb").read(),
                         "cls": i % 2})
    return {sub: index([str(out / sub)], label_col="target" if sub != "wds" else "cls", folds=3)
            for sub in ("plain", "gzip", "wds")}


@pytest.mark.parametrize("kind", ["plain", "gzip", "wds"])
def test_foreign_indexed_shards_train_and_evaluate(foreign_manifests, kind):
    m = foreign_manifests[kind]
    val = ShardLoader(ShardDataset(m, "val", 1, batch_size=3, image_size=64), num_workers=2)
    batches = list(val)
    assert [i for b in batches for i in b["id"]] == _eval_ids(m, "val", 1) and len(_eval_ids(m, "val", 1)) == 8
    assert all(b["image"].shape[1:] == (3, 64, 64) for b in batches)
    assert [t for b in batches for t in b["target"].tolist()] == [v for s in m.select("train", [1]) for v in s.labels]
    train = [b["id"] for b in ShardLoader(ShardDataset(m, "train", 1, batch_size=3, image_size=64, seed=1),
                                          num_workers=2)]
    assert sorted(i for b in train for i in b) == sorted(_eval_ids(m, "train", folds=[0, 2]))


def _indexed_tar(folder, samples):
    """A tar of (key, jpeg, json) samples written by the kit's writer, indexed as a test split."""
    from kitpkg.shards.index import index
    from kitpkg.shards.wds import TarShardWriter

    folder.mkdir()
    with open(folder / "test-0.tar", "wb") as f:
        writer = TarShardWriter(f)
        for key, pixels, meta in samples:
            writer.write(key, {"jpg": simplejpeg.encode_jpeg(pixels), "json": meta})
        writer.close()
    return index([str(folder)])


def _pixels(h, w, value):
    return np.full((h, w, 3), value, np.uint8)


def test_mixed_image_sizes_are_fine_with_an_image_size(tmp_path):
    m = _indexed_tar(tmp_path / "mixed", [(f"k{i}", _pixels(40 + 8 * (i % 2), 56, 20 * i), b'{"image_name": "k%d"}' % i)
                                          for i in range(6)])
    resized = ShardLoader(ShardDataset(m, "test", batch_size=4, image_size=32))
    assert [tuple(b["image"].shape) for b in resized] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    with pytest.raises(KitError, match="images differ in size"):
        _ids(ShardLoader(ShardDataset(m, "test", batch_size=4)))


def test_damaged_bytes_in_a_tar_are_skipped_like_any_damaged_sample(tmp_path):
    m = _indexed_tar(tmp_path / "badjson", [(f"k{i}", _pixels(32, 32, 20 * i), b'{"image_name": "k%d"}' % i)
                                            for i in range(6)])
    shard = m.shards[0]
    path = tmp_path / "badjson" / shard.file
    path.write_bytes(path.read_bytes().replace(b'{"image_name": "k2"}', b'{"image_name"! "k2"}'))  # no tar checksum
    # the manifest's per-sample CRC-32C catches it (tar members carry no checksum of their own)
    loader = ShardLoader(ShardDataset(m, "test", batch_size=4), num_workers=2)
    with pytest.warns(RuntimeWarning, match=f"{shard.file}: sample bytes do not match the manifest's CRC-32C"):
        assert _ids(loader) == ["k0", "k1", "k3", "k4", "k5"]
    assert [(d[0], d[1]) for d in loader.damaged] == [(shard.file, shard.offsets[2])]
    # without per-sample checksums the unreadable .json itself is what is reported
    shard.checksums = None
    loader = ShardLoader(ShardDataset(m, "test", batch_size=4), num_workers=2)
    with pytest.warns(RuntimeWarning, match=f"{shard.file}: sample 'k2' has an unreadable .json"):
        assert _ids(loader) == ["k0", "k1", "k3", "k4", "k5"]
