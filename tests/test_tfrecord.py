"""TFRecord framing without TensorFlow: known vectors, both CRCs checked, GZIP files, damage reported with offsets."""
import gzip
import io

import pytest

from kitpkg.shards.tfrecord import RecordError, TFRecordWriter, crc32c, frame, iter_records, masked_crc


def test_crc32c_and_frames_match_tensorflow_vectors():
    # vectors written by TensorFlow 2.21; the interop tests check against TF itself too
    assert crc32c(b"123456789") == 0xE3069283
    assert frame(b"") == bytes.fromhex("0000000000000000 29039807 d8ea82a2".replace(" ", ""))
    assert frame(b"hello") == bytes.fromhex("0500000000000000 eab2043e 68656c6c6f bb1f1c19".replace(" ", ""))
    assert masked_crc(b"hello").to_bytes(4, "little") == bytes.fromhex("bb1f1c19")


def _file(records):
    buf = io.BytesIO()
    writer = TFRecordWriter(buf)
    offsets = [writer.write(r) for r in records]
    return buf.getvalue(), offsets


def test_round_trip_with_offsets_and_resume_from_an_offset():
    records = [b"a" * n for n in (0, 1, 100, 5000)]
    data, offsets = _file(records)
    assert list(iter_records(io.BytesIO(data))) == list(zip(offsets, records))
    assert [r for _, r in iter_records(io.BytesIO(data), start=offsets[2])] == records[2:]


def test_gzip_file_is_read_transparently():
    records = [b"x%d" % i * 50 for i in range(20)]
    data, offsets = _file(records)
    got = list(iter_records(io.BytesIO(gzip.compress(data))))
    assert got == list(zip(offsets, records))


@pytest.mark.parametrize("where", ["length", "data", "footer"])
def test_flipped_byte_raises_with_shard_and_record_offset(where):
    data, offsets = _file([b"first", b"second-record", b"third"])
    pos = offsets[1] + {"length": 2, "data": 14, "footer": 12 + 13 + 1}[where]
    damaged = bytearray(data)
    damaged[pos] ^= 0x01
    with pytest.raises(RecordError) as err:
        list(iter_records(io.BytesIO(bytes(damaged)), shard="s.tfrec"))
    assert err.value.offset == offsets[1] and err.value.shard == "s.tfrec"
    assert "s.tfrec" in str(err.value) and str(offsets[1]) in str(err.value)


def test_truncated_file_raises_at_the_partial_record():
    data, offsets = _file([b"one", b"two" * 100])
    with pytest.raises(RecordError, match="truncated") as err:
        list(iter_records(io.BytesIO(data[:-10])))
    assert err.value.offset == offsets[1]
    with pytest.raises(RecordError, match="truncated record header"):
        list(iter_records(io.BytesIO(data[: offsets[1] + 5])))


def test_cut_gzip_file_raises_record_error_naming_the_shard():
    records = [bytes(range(256)) * (i + 1) for i in range(30)]
    data, offsets = _file(records)
    packed = gzip.compress(data)
    cut = packed[: len(packed) // 2]
    with pytest.raises(RecordError, match="damaged GZIP stream") as err:
        list(iter_records(io.BytesIO(cut), shard="s.tfrec.gz"))
    assert err.value.shard == "s.tfrec.gz" and err.value.offset in offsets
    with pytest.raises(RecordError, match="damaged GZIP stream"):  # seeking past the cut (resume) too
        list(iter_records(io.BytesIO(cut), shard="s.tfrec.gz", start=offsets[-1]))


def test_record_with_good_crcs_that_is_no_example_is_a_record_error():
    from kitpkg.shards.reader import iter_shard_file

    data, offsets = _file([b"\x0a\xff\xff\xff"])  # field 1, length-delimited, length runs past the end
    with pytest.raises(RecordError, match="not a tf.train.Example") as err:
        list(iter_shard_file(io.BytesIO(data), "tfrecord", "x.tfrec"))
    assert err.value.shard == "x.tfrec" and err.value.offset == offsets[0]
