"""`kitpkg index`: manifests for shards made elsewhere — offsets/ids by scanning, schema inferred, folds from names."""
import gzip
import shutil

import pytest

from kitpkg.cli import main
from kitpkg.errors import KitError
from kitpkg.shards.index import index, split_and_fold
from kitpkg.shards.manifest import load_manifest
from kitpkg.shards.reader import iter_manifest_shard
from kitpkg.shards.verify import verify


def _popular_layout(manifest, folder, compress=False):
    """Copy train shards as `trainNN-COUNT.tfrec` (the melanoma layout) and test shards as `testNN-COUNT.tfrec`."""
    folder.mkdir()
    for i, s in enumerate(manifest.shards):
        name = f"{s.split}{i:02d}-{s.samples}{'.tfrec' if manifest.format == 'tfrecord' else '.tar'}"
        data = open(manifest.path(s), "rb").read()
        (folder / name).write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return folder


def test_index_reproduces_offsets_ids_labels_and_schema(tmp_path, any_manifest):
    folder = _popular_layout(any_manifest, tmp_path / "foreign")
    m = index([str(folder)], label_col="target")
    assert load_manifest(folder) == m and verify(m) == []
    by_ids = {tuple(s.ids): s for s in m.shards}
    for ours in any_manifest.shards:
        theirs = by_ids[tuple(ours.ids)]
        assert (theirs.offsets, theirs.sha256, theirs.bytes, theirs.checksums) == \
               (ours.offsets, ours.sha256, ours.bytes, ours.checksums)
        assert theirs.split == ours.split and (theirs.labels == ours.labels if ours.split == "train" else True)
    assert m.class_counts == any_manifest.class_counts and m.image_size == 64
    if any_manifest.format == "tfrecord":
        assert m.schema == dict(sorted(any_manifest.schema.items()))
    else:
        assert {"image", "image_name", "target", "fold"} <= set(m.schema)


def test_folds_from_file_names():
    assert split_and_fold("train07-2071.tfrec", None) == ("train", 7)
    assert split_and_fold("/x/train14-2000.tfrec", 5) == ("train", 4)
    assert split_and_fold("test03-687.tfrec", None) == ("test", None)
    assert split_and_fold("data-0001.tar", None) == ("train", None)
    assert split_and_fold("train-f2-00001.tfrec", None) == ("train", 2)


def test_gzip_tfrecords_and_manifest_elsewhere(tmp_path, tfrecord_manifest):
    folder = _popular_layout(tfrecord_manifest, tmp_path / "gz", compress=True)
    m = index([str(folder)], str(tmp_path / "elsewhere"), label_col="target", folds=3)
    assert m.compression == "GZIP" and m.num_folds == 3 and {s.fold for s in m.select("train")} <= {0, 1, 2}
    assert all(s.file.startswith(str(folder)) for s in m.shards)  # not under --out: absolute paths
    assert verify(load_manifest(tmp_path / "elsewhere")) == []
    i = next(k for k, s in enumerate(m.shards) if s.samples > 3)
    records = list(iter_manifest_shard(m, i, start_sample=2))
    assert [r.id for r in records] == m.shards[i].ids[2:]


def test_errors_name_the_problem(tmp_path, tfrecord_manifest, wds_manifest):
    with pytest.raises(KitError, match="no .tfrec"):
        index([str(tmp_path)])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tfrecord_manifest.path(tfrecord_manifest.shards[0]), mixed / "a.tfrec")
    shutil.copy(wds_manifest.path(wds_manifest.shards[0]), mixed / "b.tar")
    with pytest.raises(KitError, match="mixed"):
        index([str(mixed)])
    (mixed / "b.tar").unlink()
    data = (mixed / "a.tfrec").read_bytes()
    (mixed / "a.tfrec").write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    with pytest.raises(KitError, match=r"a.tfrec: .*CRC mismatch\) at offset 0"):
        index([str(mixed)])
    with pytest.raises(KitError, match="label-col 'nope'"):
        index([tfrecord_manifest.root], str(tmp_path / "o"), label_col="nope")


def test_cli_index(tmp_path, wds_manifest, capsys):
    folder = _popular_layout(wds_manifest, tmp_path / "tars")
    assert main(["index", str(folder), "--label-col", "target"]) == 0
    assert "fold 0:" in capsys.readouterr().out and (folder / "manifest.json").exists()
    assert main(["verify", str(folder)]) == 0


def test_cut_gzip_shard_is_named_by_index_and_verify(tmp_path, tfrecord_manifest):
    folder = _popular_layout(tfrecord_manifest, tmp_path / "gz", compress=True)
    m = index([str(folder)], label_col="target")
    victim = folder / m.shards[0].file
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    problems = verify(m)  # used to crash with EOFError from inside gzip
    assert any(p.startswith(m.shards[0].file) and "damaged GZIP stream" in p for p in problems)
    with pytest.raises(KitError, match=f"cannot index .*{victim.name}: damaged GZIP stream"):
        index([str(folder)], label_col="target")


def test_index_refuses_to_replace_the_manifest_convert_wrote(tmp_path, wds_manifest, capsys):
    shutil.copytree(wds_manifest.root, tmp_path / "shards")
    before = (tmp_path / "shards" / "manifest.json").read_bytes()
    assert main(["index", str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err
    assert "written by `kitpkg convert`" in err and "--out" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "shards" / "manifest.json").read_bytes() == before, "label column, rejects, options kept"
    assert main(["index", str(tmp_path / "shards"), "--out", str(tmp_path / "beside")]) == 0  # the way out works
    assert load_manifest(tmp_path / "beside").num_samples() == wds_manifest.num_samples()
    assert main(["index", str(tmp_path / "shards"), "--out", str(tmp_path / "beside")]) == 0, "its own: re-index"
