"""WebDataset tar shards: deterministic bytes, sample offsets that can be seeked to, webdataset's key rule."""
import io

import pytest

from kitpkg.shards.reader import iter_shard_file
from kitpkg.shards.formats import RecordError
from kitpkg.shards.wds import TarShardWriter, iter_tar_samples, split_key


def _tar(samples):
    buf = io.BytesIO()
    writer = TarShardWriter(buf)
    offsets = [writer.write(key, members) for key, members in samples]
    writer.close()
    return buf.getvalue(), offsets


SAMPLES = [(f"s{i:03d}", {"jpg": bytes([i]) * (100 + 700 * i),
                          "json": b'{"image_name": "s%03d", "target": %d}' % (i, i % 2), "cls": b"%d" % (i % 2)})
           for i in range(5)]


def test_round_trip_and_seek_to_any_sample():
    data, offsets = _tar(SAMPLES)
    got = list(iter_tar_samples(io.BytesIO(data)))
    assert [o for o, _ in got] == offsets
    assert [s["__key__"] for _, s in got] == [k for k, _ in SAMPLES]
    assert got[3][1]["jpg"] == SAMPLES[3][1]["jpg"]
    tail = list(iter_tar_samples(io.BytesIO(data), start=offsets[3]))
    assert [s["__key__"] for _, s in tail] == ["s003", "s004"] and [o for o, _ in tail] == offsets[3:]


def test_same_samples_give_identical_bytes():
    assert _tar(SAMPLES)[0] == _tar(SAMPLES)[0]


def test_reader_uses_json_id_and_cls_without_unpickling():
    data, _ = _tar(SAMPLES + [("evil", {"jpg": b"x", "pyd": b"\x80\x04not-unpickled"})])
    records = list(iter_shard_file(io.BytesIO(data), "wds"))
    assert records[1].id == "s001" and records[1].fields["target"] == 1 and records[1].fields["cls"] == 1
    assert records[-1].id == "evil" and records[-1].fields == {}


def test_keys_follow_webdatasets_first_dot_rule():
    assert split_key("a/b/ISIC_1.seg.png") == ("a/b/ISIC_1", "seg.png")
    with pytest.raises(ValueError, match="dot"):
        TarShardWriter(io.BytesIO()).write("img.001", {"jpg": b"x"})


def test_truncated_tar_raises_record_error():
    data, offsets = _tar(SAMPLES)
    with pytest.raises(RecordError):
        list(iter_tar_samples(io.BytesIO(data[: offsets[2] + 600]), shard="t.tar"))


@pytest.mark.parametrize("members", [{"json": b'{"image_name": "s1", '}, {"json": b"[1, 2]"}, {"cls": b"cat"},
                                     {"json": b"\xff\xfe"}])
def test_unreadable_json_or_cls_is_a_record_error_with_shard_and_offset(members):
    data, offsets = _tar(SAMPLES[:1] + [("bad", {"jpg": b"x", **members})] + SAMPLES[2:3])
    with pytest.raises(RecordError, match="'bad' has an unreadable .json/.cls") as err:
        list(iter_shard_file(io.BytesIO(data), "wds", "t.tar"))
    assert err.value.shard == "t.tar" and err.value.offset == offsets[1]


def _bounds(data, offsets):
    return list(zip(offsets, offsets[1:] + [len(data)]))


def _foreign_tar(fmt, names):
    """A tar written by the tarfile module itself (as webdataset's writer does), in `fmt`."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in names:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return data, [o for o, _ in iter_tar_samples(io.BytesIO(data))]


@pytest.mark.parametrize("kind", ["ours", "pax-long-names", "gnu-long-names", "ustar-prefix", "ustar-short"])
def test_random_access_reads_each_sample_exactly_as_the_tarfile_module_does(kind):
    import tarfile

    from kitpkg.shards.wds import read_tar_sample

    if kind == "ours":
        data, offsets = _tar(SAMPLES)
    else:
        # names over 100 characters: pax/GNU extension headers, or a ustar name prefix
        deep = "d/" * 60 if kind != "ustar-short" else ""
        fmt = {"pax-long-names": tarfile.PAX_FORMAT, "gnu-long-names": tarfile.GNU_FORMAT,
               "ustar-prefix": tarfile.USTAR_FORMAT, "ustar-short": tarfile.USTAR_FORMAT}[kind]
        data, offsets = _foreign_tar(fmt, [(f"{deep}k{i}.{ext}", bytes([i]) * (50 + 600 * i))
                                           for i in range(4) for ext in ("jpg", "cls")])
    want = [s for _, s in iter_tar_samples(io.BytesIO(data))]
    got = [read_tar_sample(io.BytesIO(data), start, end, "t.tar") for start, end in _bounds(data, offsets)]
    assert got == want and len(got) == len(offsets)


def test_random_access_checks_the_manifest_crc_and_names_shard_and_offset():
    from crc32c import crc32c

    from kitpkg.shards.wds import read_tar_sample

    data, offsets = _tar(SAMPLES)
    (s2, e2), (s4, e4) = _bounds(data, offsets)[2], _bounds(data, offsets)[4]
    assert read_tar_sample(io.BytesIO(data), s2, e2, "t.tar", crc32c(data[s2:e2]))["__key__"] == "s002"
    flipped = bytearray(data)
    flipped[e2 - 700] ^= 0xFF  # inside s002's jpg payload: tar has no checksum of its own for it
    with pytest.raises(RecordError, match=f"t.tar: .*CRC-32C.* at offset {s2}$"):
        read_tar_sample(io.BytesIO(bytes(flipped)), s2, e2, "t.tar", crc32c(data[s2:e2]))
    with pytest.raises(RecordError, match=f"t.tar: .*truncated.* at offset {s4}$"):
        read_tar_sample(io.BytesIO(data[:e4 - 2000]), s4, e4, "t.tar")


def _header(name, size, kind=b"0", magic=b"ustar\x0000", at345=b""):
    """A hand-made tar header, for layouts the tarfile module does not write but other tools do."""
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108], b[108:116], b[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    b[124:136], b[136:148] = b"%011o\0" % size, b"00000000000\0"
    b[156:157], b[257:265], b[345:345 + len(at345)] = kind, magic, at345
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def _member(name, data, **kw):
    return _header(name, len(data), **kw) + data + b"\0" * (-len(data) % 512)


J = b'{"image_name": "A"}'
ODD = {  # first sample of each; a second plain sample and the end blocks follow
    "directory entry with a size field": [_member(b"a.jpg", b"JPEGa"), _header(b"a.d", 1024, kind=b"5"),
                                          _member(b"a.json", J), _member(b"a.cls", b"1")],
    "v7 directory entry": [_member(b"a.jpg", b"JPEGa"), _header(b"a.d/", 0, kind=b"\0"), _member(b"a.json", J)],
    "GNU header with an atime at 345": [_member(b"a.jpg", b"JPEGa", magic=b"ustar  \0", at345=b"14717524461\0"),
                                        _member(b"a.json", J, magic=b"ustar  \0")],
    "pax header with a path": [_member(b"././@PaxHeader", b"17 path=long.jpg\n", kind=b"x"),
                               _member(b"short.jpg", b"JPEGa")],
}


@pytest.mark.parametrize("layout", sorted(ODD))
def test_random_access_matches_tarfile_on_layouts_other_tools_write(layout):
    from crc32c import crc32c

    from kitpkg.shards.wds import read_tar_sample

    first = b"".join(ODD[layout])
    data = first + _member(b"b.jpg", b"JPEGb") + _member(b"b.json", J) + b"\0" * 1024
    want = next(iter_tar_samples(io.BytesIO(data)))[1]
    assert read_tar_sample(io.BytesIO(data), 0, len(first), "t.tar", crc32c(data[:len(first)])) == want


def test_webdatasets_own_tars_take_the_fast_path():
    """webdataset's TarWriter puts a pax header (a float mtime) before every member: still no tarfile needed."""
    import webdataset as wds

    from kitpkg.shards import wds as kit_wds

    buf = io.BytesIO()
    with wds.TarWriter(buf) as w:
        for i in range(3):
            w.write({"__key__": f"s{i}", "jpg": bytes([i]) * 700, "json": {"image_name": f"s{i}"}, "cls": i})
    data = buf.getvalue()
    offsets = [o for o, _ in iter_tar_samples(io.BytesIO(data))]
    want = [s for _, s in iter_tar_samples(io.BytesIO(data))]
    fast = [kit_wds._plain_members(data[a:b], "t.tar", a) for a, b in _bounds(data, offsets)]
    assert data[156:157] == b"x" and fast == want
