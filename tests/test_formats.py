"""The shard-format table: a format is one FORMATS entry plus its codec, and convert, the manifest, verify and the
readers all go through it; foreign files are recognised by name or content."""
from __future__ import annotations

import json
import struct
from typing import Dict, Iterator

import pytest

from kitpkg.errors import KitError
from kitpkg.shards import formats
from kitpkg.shards.convert import convert
from kitpkg.shards.formats import FORMATS, Record, RecordError, ShardFormat, detect
from kitpkg.shards.manifest import load_manifest
from kitpkg.shards.reader import iter_manifest_shard, open_shard, read_sample
from kitpkg.shards.tfrecord import TFRecordWriter
from kitpkg.shards.verify import verify
from test_convert_inputs import _tiny_source


# a toy codec: per sample `uint32 length | JSON {"row": …, "image": hex}` — what a new format's module provides
class _LinesWriter:
    def __init__(self, f, schema, image_key):
        self._f, self._offset = f, 0

    def add(self, key: str, image: bytes, row: Dict, cls) -> int:
        body = json.dumps({"row": row, "image": image.hex()}).encode()
        start, self._offset = self._offset, self._offset + 4 + len(body)
        self._f.write(struct.pack("<I", len(body)) + body)
        return start

    def close(self) -> None:
        pass


def _record(f, offset: int, id_col: str, shard: str) -> Record:
    head = f.read(4)
    if len(head) < 4:
        raise RecordError(shard, offset, "truncated")
    data = json.loads(f.read(struct.unpack("<I", head)[0]))
    return Record(str(data["row"][id_col]), bytes.fromhex(data["image"]), data["row"], offset)


def _stream(f, shard: str, start: int, id_col: str, image_key: str, check_crc: bool) -> Iterator[Record]:
    f.seek(start)
    offset = start
    while f.read(1):
        f.seek(offset)
        record = _record(f, offset, id_col, shard)
        yield record
        offset = f.tell()


def _sample(f, manifest, shard, sample: int, check_crc: bool, keys) -> Record:
    f.seek(shard.offsets[sample])
    return _record(f, shard.offsets[sample], manifest.id_col, shard.file)


LINES = ShardFormat("lines", (".lines",), "toy", writer=_LinesWriter, stream=_stream, sample=_sample,
                    sniff=lambda name, head: name.endswith(".lines"), schema=lambda first, path: {})


def test_a_new_format_is_one_entry_in_the_table(tmp_path, monkeypatch):
    """convert, the manifest loader, verify and both readers take a format from the table alone."""
    monkeypatch.setitem(FORMATS, "lines", LINES)
    _tiny_source(tmp_path, n=10, csv="t.csv")
    m = convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / "out", fmt="lines", sizes=(16,), group_col=None,
                folds=2, shard_samples=3, workers=1, progress=False)[16]
    assert {s.file.rsplit(".", 1)[1] for s in m.shards} == {"lines"}
    loaded = load_manifest(m.root)
    assert loaded.format == "lines" and verify(loaded) == []
    streamed = {r.id: r for i in range(len(m.shards)) for r in iter_manifest_shard(loaded, i)}
    assert sorted(streamed) == sorted(f"a{i}" for i in range(10))
    for i, shard in enumerate(loaded.shards):
        with open_shard(loaded.path(shard)) as f:
            for k in reversed(range(shard.samples)):  # random access by the recorded offsets
                record = read_sample(f, loaded, i, k)
                assert record.id == shard.ids[k] and record.image == streamed[record.id].image
                assert record.image[:2] == b"\xff\xd8", "the converted JPEG, as written"


def test_every_format_writes_files_with_its_own_extension(tmp_path):
    _tiny_source(tmp_path, n=4, csv="t.csv")
    for name, fmt in FORMATS.items():
        m = convert(tmp_path / "src", tmp_path / "t.csv", tmp_path / name, fmt=name, sizes=(16,), group_col=None,
                    folds=None, workers=1, progress=False)[16]
        assert all(s.file.endswith(fmt.extension) for s in m.shards), name
        assert all(detect(m.path(s)) == (name, None) for s in m.shards), name


def test_foreign_files_are_recognised_by_content_and_junk_is_named(tmp_path):
    with open(tmp_path / "records.bin", "wb") as f:  # a TFRecord under a name no format claims
        TFRecordWriter(f).write(b"payload")
    assert detect(str(tmp_path / "records.bin")) == ("tfrecord", None)
    (tmp_path / "notes.bin").write_bytes(b"just some text, not a shard" * 30)
    with pytest.raises(KitError, match="notes.bin: not a shard of any known format"):
        detect(str(tmp_path / "notes.bin"))


def test_an_unknown_format_name_is_a_kit_error_naming_the_known_ones():
    with pytest.raises(KitError, match="unknown shard format 'parquet'; expected one of tfrecord, wds"):
        formats.shard_format("parquet")
