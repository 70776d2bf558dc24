"""`kitpkg convert`: round trips in both formats, one fold per shard, determinism, sizes, aspects, zip, options."""
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kitpkg.cli import main
from kitpkg.errors import KitError
from kitpkg.shards.convert import convert, summarize
from kitpkg.shards.manifest import load_manifest
from kitpkg.shards.reader import iter_manifest_shard


def _records(manifest, split=None):
    return [r for i, s in enumerate(manifest.shards) if split in (None, s.split)
            for r in iter_manifest_shard(manifest, i)]


def test_round_trip_holds_every_row_and_image(any_manifest, demo_source):
    m = any_manifest
    train = pd.read_csv(demo_source.train_csv).set_index("image_name")
    records = _records(m, "train")
    assert sorted(r.id for r in records) == sorted(train.index)
    for r in records[:10]:
        row = train.loc[r.id]
        assert r.fields["patient_id"] == row.patient_id and r.fields["target"] == row.target
        assert r.fields["age_approx"] == pytest.approx(row.age_approx)
        assert r.fields["anatom_site_general_challenge"] == ("" if pd.isna(row.anatom_site_general_challenge)
                                                             else row.anatom_site_general_challenge)
        img = Image.open(io.BytesIO(r.image))
        assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"
    test_ids = [r.id for r in _records(m, "test")]
    assert test_ids == list(pd.read_csv(demo_source.test_csv).image_name)  # test keeps CSV order


def test_tfrecord_schema_follows_csv_types(tfrecord_manifest):
    assert tfrecord_manifest.schema == {"image": "bytes", "image_name": "bytes", "patient_id": "bytes", "sex": "bytes",
                                        "age_approx": "float", "anatom_site_general_challenge": "bytes",
                                        "diagnosis": "bytes", "benign_malignant": "bytes", "target": "int64",
                                        "fold": "int64"}


def test_wds_members_are_jpg_json_cls(wds_manifest):
    import tarfile

    with tarfile.open(wds_manifest.path(wds_manifest.shards[0])) as tar:
        names = tar.getnames()[:3]
        key = names[0].split(".")[0]
        assert names == [f"{key}.jpg", f"{key}.json", f"{key}.cls"]
        row = json.loads(tar.extractfile(names[1]).read())
        assert row["image_name"] == key and int(tar.extractfile(names[2]).read()) == row["target"]


def test_every_shard_holds_one_fold_and_patients_never_straddle(any_manifest):
    m = any_manifest
    fold_of_patient = {}
    for i, shard in enumerate(m.shards):
        if shard.split != "train":
            assert shard.fold is None
            continue
        for r in iter_manifest_shard(m, i):
            assert r.fields["fold"] == shard.fold
            assert fold_of_patient.setdefault(r.fields["patient_id"], shard.fold) == shard.fold
    assert m.folds() == [0, 1, 2] and all(s.samples <= 8 for s in m.shards)
    for k in m.folds():  # stratified: every fold has positives
        assert sum(label for s in m.select("train", [k]) for label in s.labels) >= 1


def test_same_output_whatever_workers(tmp_path, demo_source, tfrecord_manifest):
    import cv2

    # cv2 already used in this process (as albumentations would): its thread pool must not deadlock forked workers
    cv2.resize(np.zeros((500, 500, 3), np.uint8), (100, 100))
    out = tmp_path / "w2"
    convert(demo_source.images, demo_source.train_csv, out, fmt="tfrecord", sizes=(64,), folds=3,
            test_csv=demo_source.test_csv, shard_samples=8, workers=2, progress=False)
    ref = tfrecord_manifest.root
    for name in sorted(os.listdir(ref)):
        assert (out / "64" / name).read_bytes() == open(os.path.join(ref, name), "rb").read(), name


def test_several_sizes_from_one_pass_and_aspect_policies(tmp_path, demo_source):
    for aspect in ("crop", "pad", "squash"):
        ms = convert(demo_source.images, demo_source.train_csv, tmp_path / aspect, fmt="wds", sizes=(32, 48),
                     folds=2, shard_samples=64, workers=1, progress=False, aspect=aspect)
        assert sorted(ms) == [32, 48]
        for size, m in ms.items():
            assert load_manifest(tmp_path / aspect / str(size)) == m
            img = np.asarray(Image.open(io.BytesIO(_records(m)[0].image)))
            assert img.shape == (size, size, 3)
            if aspect == "pad":  # 320×240 → 4:3 fits with black bars top and bottom
                assert img[0].mean() < 8 and img[size // 2].mean() > 60
            else:
                assert img[0].mean() > 60


def test_zip_source_with_nested_folders_and_ids_with_extension(tmp_path, demo_source):
    zpath = tmp_path / "isic.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(demo_source.images.rglob("*.jpg")):
            zf.write(p, f"jpeg/{p.parent.name}/{p.name}")
        zf.writestr("__MACOSX/jpeg/._x.jpg", b"junk")
    csv = tmp_path / "train.csv"
    df = pd.read_csv(demo_source.train_csv)
    df["image_name"] = df.image_name + ".jpg"
    df.to_csv(csv, index=False)
    m = convert(zpath, csv, tmp_path / "out", fmt="tfrecord", sizes=(32,), folds=2, workers=2, progress=False)[32]
    assert m.num_samples() == 48 and sorted(m.fold_of()) == sorted(df.image_name)
    # the 10 test images are in the zip but not in this CSV: listed, not silently dropped
    assert len(m.rejected) == 10 and {r["reason"] for r in m.rejected} == {"not in the CSV"}
    assert not any(p.suffix == ".jpg" for p in (tmp_path / "out").rglob("*"))  # never extracted


def test_existing_fold_column_is_respected(tmp_path, demo_source):
    df = pd.read_csv(demo_source.train_csv)
    df["kfold"] = np.arange(len(df)) % 4
    df.to_csv(tmp_path / "train.csv", index=False)
    m = convert(demo_source.images, tmp_path / "train.csv", tmp_path / "out", sizes=(32,), fold_col="kfold",
                workers=1, progress=False)[32]
    assert m.num_folds == 4 and m.fold_of() == dict(zip(df.image_name, df.kfold))


def test_unlabeled_and_ungrouped(tmp_path, demo_source):
    m = convert(demo_source.images, demo_source.test_csv, tmp_path / "out", sizes=(32,), label_col=None,
                group_col=None, folds=2, workers=1, progress=False)[32]
    assert m.label_col is None and m.class_counts == {} and m.num_samples() == 10
    assert all(s.labels is None for s in m.shards)
    assert "fold 0" in summarize(m) and "48" not in summarize(m).split("rejected")[0]


@pytest.mark.parametrize("option, column", [({"id_col": "name"}, "name"), ({"label_col": "label"}, "label"),
                                            ({"group_col": "patient"}, "patient")])
def test_bad_csv_is_a_clear_error_before_any_work(tmp_path, demo_source, option, column):
    with pytest.raises(KitError, match=f"no column '{column}'"):
        convert(demo_source.images, demo_source.train_csv, tmp_path / "out", sizes=(32,), progress=False, **option)
    assert not list(tmp_path.rglob("*.tfrec"))


def test_unreadable_csv_and_bad_options(tmp_path, demo_source):
    (tmp_path / "bad.csv").write_bytes(b"\x00\x01\x02")
    with pytest.raises(KitError, match="bad.csv"):
        convert(demo_source.images, tmp_path / "bad.csv", tmp_path / "out", progress=False)
    with pytest.raises(KitError, match="--aspect"):
        convert(demo_source.images, demo_source.train_csv, tmp_path / "out", aspect="stretch", progress=False)
    with pytest.raises(KitError, match="no such folder"):
        convert(tmp_path / "nope", demo_source.train_csv, tmp_path / "out", progress=False)


def test_rerun_with_other_options_is_refused_unless_overwrite(tmp_path, demo_source):
    kw = dict(sizes=(32,), folds=2, workers=1, progress=False)
    convert(demo_source.images, demo_source.train_csv, tmp_path, **kw)
    with pytest.raises(KitError, match="quality.*--overwrite"):
        convert(demo_source.images, demo_source.train_csv, tmp_path, quality=70, **kw)
    m = convert(demo_source.images, demo_source.train_csv, tmp_path, quality=70, overwrite=True, **kw)[32]
    assert m.options["quality"] == 70


def test_cli_convert_prints_summary(tmp_path, demo_source, capsys):
    shutil.copytree(demo_source.images, tmp_path / "imgs")
    rc = main(["convert", str(tmp_path / "imgs"), str(demo_source.train_csv), str(tmp_path / "out"), "--size", "32,40",
               "--format", "wds", "--folds", "2", "--workers", "1", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0 and "fold 1:" in out.out and "rejected: 10" in out.out
    assert "48 train + 0 test images" in out.err
    assert main(["convert", "x", "y", str(tmp_path / "o2"), "--size", "32"]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "verify", "index", "demo-data"])
def test_every_option_has_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    import re

    options = re.findall(r"^\s+(--[a-z-]+)", text, re.M)
    assert options and "--help" in text
    for block in re.split(r"\n(?=\s+--)", text.split("options:")[1])[1:]:  # each option's entry has its own words
        assert len(block.split()) > 2, block


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list open files")
def test_in_process_convert_leaves_no_open_zip_and_keeps_cv2_threads(tmp_path, demo_source):
    import cv2

    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((demo_source.images / "train").glob("*.jpg"))[:6]:
            zf.write(p, p.name)
    before = cv2.getNumThreads()
    convert(zpath, demo_source.train_csv, tmp_path / "out", sizes=(16,), folds=None, workers=1, progress=False)

    def open_files():
        return {os.path.realpath(os.path.join("/proc/self/fd", fd)) for fd in os.listdir("/proc/self/fd")
                if os.path.exists(os.path.join("/proc/self/fd", fd))}
    assert str(zpath.resolve()) not in open_files(), "the zip is closed when convert returns"
    assert cv2.getNumThreads() == before, "the caller's cv2 thread setting is restored"
