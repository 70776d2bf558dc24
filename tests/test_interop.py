"""Interop with the real libraries: TensorFlow and webdataset read our shards; we read theirs (plain and GZIP)."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from kitpkg.shards.index import index
from kitpkg.shards.reader import iter_manifest_shard, iter_shard_file
from kitpkg.shards.verify import verify

TF_KIND = {"bytes": "string", "int64": "int64", "float": "float32"}


def _ours(manifest):
    return {r.id: r for i in range(len(manifest.shards)) for r in iter_manifest_shard(manifest, i)}


def _jpeg(seed, size=48):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_tensorflow_reads_our_tfrecords(tfrecord_manifest):
    import tensorflow as tf

    m = tfrecord_manifest
    ours = _ours(m)
    spec = {k: tf.io.FixedLenFeature([], getattr(tf, TF_KIND[v])) for k, v in m.schema.items()}
    test_keys = ["image", "image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]
    seen = 0
    for split, keys in (("train", list(spec)), ("test", test_keys)):
        files = [m.path(s) for s in m.select(split)]
        for raw in tf.data.TFRecordDataset(files):  # checks both CRCs of every record
            ex = tf.io.parse_single_example(raw, {k: spec[k] for k in keys})
            rid = ex["image_name"].numpy().decode()
            assert tf.io.decode_jpeg(ex["image"]).shape == (64, 64, 3)
            assert ex["image"].numpy() == ours[rid].image
            assert ex["patient_id"].numpy().decode() == ours[rid].fields["patient_id"]
            assert float(ex["age_approx"]) == pytest.approx(ours[rid].fields["age_approx"])
            if split == "train":
                assert int(ex["fold"]) == ours[rid].fields["fold"] and int(ex["target"]) == ours[rid].fields["target"]
            seen += 1
    assert seen == len(ours) == 58


def test_webdataset_reads_our_tars(wds_manifest):
    import webdataset as wds

    m = wds_manifest
    ours = _ours(m)
    # raw bytes only, decoded here as JSON and JPEG: nothing from a shard is unpickled
    ds = wds.WebDataset([m.path(s) for s in m.shards], shardshuffle=False, empty_check=False)
    seen = 0
    for sample in ds:
        row = json.loads(sample["json"])
        rid = row["image_name"]
        assert sample["jpg"] == ours[rid].image and row == {k: v for k, v in ours[rid].fields.items() if k != "cls"}
        if "cls" in sample:
            assert int(sample["cls"]) == row["target"]
        assert Image.open(io.BytesIO(sample["jpg"])).size == (64, 64)
        seen += 1
    assert seen == len(ours) == 58


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_kitpkg_reads_tf_written_tfrecords(tmp_path, compression):
    import tensorflow as tf

    def feature(v):
        if isinstance(v, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        if isinstance(v, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    rows = {}
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    for shard in range(3):
        with tf.io.TFRecordWriter(str(tmp_path / f"train{shard:02d}-4.tfrec"), options) as writer:
            for j in range(4):
                rid = f"ISIC_{shard}{j}"
                rows[rid] = {"image": _jpeg(shard * 10 + j), "image_name": rid.encode(), "target": j % 2,
                             "patient_id": shard, "age_approx": 45.0}
                ex = tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in rows[rid].items()}))
                writer.write(ex.SerializeToString())
    m = index([str(tmp_path)], label_col="target")
    assert m.compression == compression and m.folds() == [0, 1, 2] and verify(m) == []
    assert m.schema == {"age_approx": "float", "image": "bytes", "image_name": "bytes", "patient_id": "int64",
                        "target": "int64"}
    got = _ours(m)
    assert sorted(got) == sorted(rows)
    for rid, rec in got.items():
        assert rec.image == rows[rid]["image"] and rec.fields["target"] == rows[rid]["target"]
    shard = m.shards[1]
    assert [r.id for r in iter_manifest_shard(m, 1, start_sample=2)] == shard.ids[2:]


def test_kitpkg_reads_webdataset_shardwriter_tars(tmp_path):
    import webdataset as wds

    rows = {}
    with wds.ShardWriter(str(tmp_path / "train-%02d.tar"), maxcount=5, verbose=0) as sink:
        for i in range(12):
            key = f"sample{i:04d}"
            rows[key] = _jpeg(i)
            sink.write({"__key__": key, "jpg": rows[key], "cls": i % 3, "json": {"image_name": key, "site": "torso"}})
    m = index([str(tmp_path)], label_col="cls")
    assert [s.samples for s in m.shards] == [5, 5, 2] and verify(m) == []
    assert m.class_counts == {"0": 4, "1": 4, "2": 4}
    with open(m.path(m.shards[1]), "rb") as f:
        records = list(iter_shard_file(f, "wds"))
    assert [r.id for r in records] == [f"sample{i:04d}" for i in range(5, 10)]
    assert all(r.image == rows[r.id] and r.fields["cls"] == int(r.id[-4:]) % 3 for r in records)
