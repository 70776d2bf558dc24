"""The bad-input zoo (never fatal, never silent) and the JPEG variants that must convert correctly."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from kitpkg.shards.convert import convert
from kitpkg.shards.imaging import BadImage, convert_image
from kitpkg.shards.reader import iter_manifest_shard


def _photo(w=120, h=80):
    """Left half red, right half blue, a green stripe on top: orientation and colour are easy to check."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (220, 30, 30)
    a[:, w // 2:] = (30, 30, 220)
    a[: h // 8] = (30, 200, 30)
    return Image.fromarray(a)


def _jpeg(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _bomb(width, height):
    data = bytearray(_jpeg(_photo(16, 16)))
    sof = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    data[sof + 5: sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    good = _jpeg(_photo())
    png = io.BytesIO()
    _photo().save(png, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    files = {
        "ok_1.jpg": good, "a/ok_2.jpg": good, "b/ok_3.JPEG": good,
        "truncated.jpg": good[: len(good) // 2], "empty.jpg": b"", "text.jpg": b"hello, not an image",
        "png_as_jpg.jpg": png.getvalue(), "real_png.png": png.getvalue(),
        "bomb.jpg": _bomb(30000, 30000), "bomb_medium.jpg": _bomb(10000, 10000),
        "cmyk.jpg": _jpeg(_photo().convert("CMYK")), "gray.jpg": _jpeg(_photo().convert("L")),
        "progressive.jpg": _jpeg(_photo(), progressive=True), "rotated.jpg": _jpeg(_photo(), exif=exif),
        "stray.jpg": good, "a/dup.jpg": good, "b/dup.jpg": good, "notes.txt": b"ignored: not an image name",
    }
    for name, data in files.items():
        (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "src" / name).write_bytes(data)
    ids = ["ok_1", "ok_2", "ok_3", "truncated", "empty", "text", "png_as_jpg", "real_png", "bomb", "bomb_medium",
           "cmyk", "gray", "progressive", "rotated", "dup", "missing_1", "ok_1"]
    lines = ["image_name,target,patient_id"] + [f"{i},{k % 2},p{k // 2}" for k, i in enumerate(ids)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    ms = convert(root / "src", root / "train.csv", root / "out", fmt="tfrecord", sizes=(32,), folds=2,
                 workers=2, progress=False, aspect="squash")
    return ms[32], {r.id: r for i in range(len(ms[32].shards)) for r in iter_manifest_shard(ms[32], i)}


def test_every_bad_input_is_rejected_with_its_reason(zoo):
    manifest, _ = zoo
    reasons = {(r["id"], r["file"]): r["reason"] for r in manifest.rejected}
    expect = {("truncated", "truncated.jpg"): "corrupt or truncated", ("empty", "empty.jpg"): "empty file",
              ("text", "text.jpg"): "not an image", ("png_as_jpg", "png_as_jpg.jpg"): "not a JPEG (PNG data",
              ("bomb", "bomb.jpg"): "decompression bomb", ("bomb_medium", "bomb_medium.jpg"): "decompression bomb",
              ("missing_1", ""): "image missing", ("ok_1", "ok_1.jpg"): "duplicate id",
              ("stray", "stray.jpg"): "not in the CSV", ("dup", "b/dup.jpg"): "duplicate id"}
    for key, reason in expect.items():
        assert reason in reasons.get(key, ""), (key, reasons.get(key))
    assert len(manifest.rejected) == len(expect)


def test_good_and_unusual_jpegs_are_converted(zoo):
    manifest, records = zoo
    assert sorted(records) == ["cmyk", "dup", "gray", "ok_1", "ok_2", "ok_3", "progressive", "real_png", "rotated"]
    assert manifest.num_samples() == 9
    for rid, record in records.items():
        img = Image.open(io.BytesIO(record.image))
        assert img.mode == "RGB" and img.size == (32, 32), rid
        px = np.asarray(img).astype(int)
        if rid == "gray":
            assert np.abs(px[..., 0] - px[..., 2]).max() < 8
        elif rid != "rotated":  # red left, blue right, green on top — CMYK included (no inverted colours)
            assert px[20, 4, 0] > 150 and px[20, 4, 2] < 90 and px[20, 28, 2] > 150 and px[1, 16, 1] > 150, rid


def test_exif_orientation_is_applied(zoo):
    _, records = zoo
    got = np.asarray(Image.open(io.BytesIO(records["rotated"].image))).astype(int)
    exif = Image.Exif()
    exif[0x0112] = 6
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_jpeg(_photo(), exif=exif)))).resize((32, 32)))
    assert np.abs(got - want.astype(int)).mean() < 12
    assert got[4, 16, 0] > 150 and got[28, 16, 2] > 150 and got[16, 30, 1] > 150  # red top, blue bottom, green right


def test_dct_scaled_decode_of_a_large_original_matches_a_full_decode():
    big = _photo(2400, 1600).resize((2400, 1600))
    data = _jpeg(big)
    (out,) = convert_image(data, [64], "crop", 95)
    reference = np.asarray(ImageOps.fit(big, (64, 64), Image.LANCZOS)).astype(int)
    assert np.abs(np.asarray(Image.open(io.BytesIO(out))).astype(int) - reference).mean() < 6
    with pytest.raises(BadImage, match="empty"):
        convert_image(b"", [64])


def test_summary_line_counts_rejections(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(_jpeg(_photo()))
    (tmp_path / "src" / "b.jpg").write_bytes(b"")
    (tmp_path / "t.csv").write_text("image_name,target\na,0\nb,1\nc,1\n")
    convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / "out", sizes=(16,), group_col=None, folds=None,
            workers=1, progress=False)
    err = capsys.readouterr().err
    assert "1 train + 0 test images" in err and "2 rejected" in err and "empty file" in err and "image missing" in err


def _tiny_source(root, n=6, csv=None):
    """`n` small JPEGs a0..a{n-1}.jpg in root/src, and with `csv` a labels file of that name listing them."""
    (root / "src").mkdir()
    for i in range(n):
        (root / "src" / f"a{i}.jpg").write_bytes(_jpeg(_photo(40, 40)))
    if csv:
        (root / csv).write_text("image_name,target\n" + "".join(f"a{i},{i % 2}\n" for i in range(n)))


def test_csv_column_named_image_is_refused_for_tfrecord_and_kept_in_wds(tmp_path):
    from kitpkg.errors import KitError

    _tiny_source(tmp_path)
    (tmp_path / "t.csv").write_text("image,target\n" + "".join(f"a{i},{i % 2}\n" for i in range(6)))
    opts = dict(sizes=(16,), id_col="image", group_col=None, folds=None, workers=1, progress=False)
    with pytest.raises(KitError, match=r"t.csv: column 'image' would overwrite .* JPEG bytes"):
        convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / "tf", fmt="tfrecord", **opts)
    assert not (tmp_path / "tf").exists(), "refused before anything is written"
    m = convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / "wds", fmt="wds", **opts)[16]
    records = list(iter_manifest_shard(m, 0))
    assert sorted(r.id for r in records) == [f"a{i}" for i in range(6)]
    assert all(Image.open(io.BytesIO(r.image)).size == (16, 16) for r in records)


def test_test_csv_with_blanks_in_a_whole_number_column_converts(tmp_path):
    _tiny_source(tmp_path)
    (tmp_path / "t.csv").write_text("image_name,target,age\n" + "".join(f"a{i},{i % 2},{30 + i}\n" for i in range(4)))
    (tmp_path / "test.csv").write_text("image_name,age\na4,\na5,45\n")  # pandas reads age as float here, int above
    m = convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / "out", sizes=(16,), group_col=None, folds=None,
                test_csv=tmp_path / "test.csv", workers=1, progress=False)[16]
    assert m.schema["age"] == "float", "one schema for the shard set: int + float columns become float"
    rows = {r.id: r.fields for i in range(len(m.shards)) for r in iter_manifest_shard(m, i)}
    assert rows["a1"]["age"] == 31.0 and rows["a5"]["age"] == 45.0 and np.isnan(rows["a4"]["age"])


@pytest.mark.timeout(120)
def test_an_image_that_kills_its_worker_is_rejected_and_the_run_finishes(tmp_path, monkeypatch):
    """A decoder crash or an OOM kill in a worker must cost one image, not hang the conversion."""
    import os
    import signal

    import kitpkg.shards.convert as convert_module

    n = 24
    _tiny_source(tmp_path, n, csv="t.csv")
    real = convert_module.convert_image

    def crashing(data, sizes, aspect, quality, name):  # the forked workers inherit this
        if name in ("a5.jpg", "a17.jpg"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(data, sizes, aspect, quality, name)
    monkeypatch.setattr(convert_module, "convert_image", crashing)
    m = convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / "out", sizes=(16,), group_col=None, folds=2,
                workers=2, progress=False)[16]
    assert sorted(r["id"] for r in m.rejected) == ["a17", "a5"]
    assert all("killed its decoder process" in r["reason"] for r in m.rejected)
    kept = sorted(r.id for i in range(len(m.shards)) for r in iter_manifest_shard(m, i))
    assert kept == sorted(f"a{i}" for i in range(n) if i not in (5, 17))


@pytest.mark.timeout(120)
def test_workers_dying_whatever_the_image_stop_the_run_and_a_rerun_continues(tmp_path, monkeypatch):
    """Deaths that are the machine's (memory, a broken install) must not turn into a shard set of rejections."""
    import os

    import kitpkg.shards.convert as convert_module
    from kitpkg.errors import KitError

    n = 12
    _tiny_source(tmp_path, n, csv="t.csv")
    args = (tmp_path / "src", tmp_path / "t.csv", tmp_path / "out")
    opts = dict(sizes=(16,), group_col=None, folds=2, workers=2, progress=False, shard_samples=4)
    monkeypatch.setattr(convert_module, "_init_worker", lambda *a: os._exit(1))  # every pool process dies at start
    with pytest.raises(KitError, match="3 images in a row each killed their worker process"):
        convert(*args, **opts)
    assert not (tmp_path / "out" / "16" / "manifest.json").exists()
    monkeypatch.undo()
    m = convert(*args, **opts)[16]
    assert m.rejected == [] and sum(s.samples for s in m.shards) == n


def test_convert_keeps_a_bounded_number_of_tasks_in_flight():
    from concurrent.futures import Future

    from kitpkg.shards.pool import _in_order

    class Pool:
        submitted = 0

        def submit(self, fn, rels):
            Pool.submitted += 1
            f = Future()
            f.set_result([(True, r) for r in rels])
            return f
    rels = [f"r{i}" for i in range(1000)]
    got, most = [], 0
    for chunk in _in_order(Pool(), rels, 10, 1, window=8):
        got += [r for _, r in chunk]
        most = max(most, Pool.submitted - len(got))
    assert got == rels[10:] and most <= 8


def test_zip_members_too_big_to_be_images_are_refused_before_they_are_inflated(tmp_path, monkeypatch):
    import zipfile

    from kitpkg.shards import imaging

    good = _jpeg(_photo(40, 40))
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(tmp_path / "src.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.jpg", good)
        with zf.open("zeros.jpg", "w") as w:  # a tiny JPEG and 24 MiB of zeros: a ~25 KB member
            w.write(_jpeg(_photo(16, 16)))
            for _ in range(24):
                w.write(zeros)
        with zf.open("huge.jpg", "w") as w:  # a plausible 4000×4000 header, but over the (lowered) byte limit
            w.write(_bomb(4000, 4000))
            for _ in range(40):
                w.write(zeros)
    assert (tmp_path / "src.zip").stat().st_size < 1 << 20
    (tmp_path / "t.csv").write_text("image_name,target\ngood,1\nzeros,0\nhuge,1\n")
    monkeypatch.setattr(imaging, "MAX_FILE_BYTES", 32 << 20)
    inflated = {}
    real_read = zipfile.ZipExtFile.read

    def read(self, n=-1):
        data = real_read(self, n)
        inflated[self.name] = inflated.get(self.name, 0) + len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a: pytest.fail("a member was read whole"))
    m = convert(tmp_path / "src.zip", tmp_path / "t.csv", tmp_path / "out", sizes=(16,), folds=0, group_col=None,
                workers=1, progress=False)[16]
    reasons = {r["id"]: r["reason"] for r in m.rejected}
    assert reasons["zeros"].startswith("implausible file size: 25 MB for a 16×16 image")
    assert reasons["huge"].startswith("file too large: 42 MB, over the 34 MB limit")
    assert inflated["zeros.jpg"] <= imaging.HEAD_BYTES and inflated["huge.jpg"] <= imaging.HEAD_BYTES
    assert m.num_samples() == 1 and inflated["good.jpg"] == len(good)
