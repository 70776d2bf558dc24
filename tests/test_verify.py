"""`kitpkg verify`: intact shards pass; flipped bytes, truncation and missing files are named with shard and offset."""
import pathlib
import shutil

import pytest

from kitpkg.cli import main
from kitpkg.shards.manifest import load_manifest
from kitpkg.shards.verify import verify


@pytest.fixture
def copy(tmp_path, any_manifest):
    shutil.copytree(any_manifest.root, tmp_path / "shards")
    return load_manifest(tmp_path / "shards")


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def test_intact_shards_pass(any_manifest, capsys):
    assert verify(any_manifest) == []
    assert main(["verify", any_manifest.root]) == 0
    assert "OK" in capsys.readouterr().out


def test_flipped_image_byte_is_located(copy, capsys):
    shard = copy.shards[2]
    sample = 3
    _flip(pathlib.Path(copy.path(shard)), shard.offsets[sample] + 700)
    problems = verify(copy)
    assert problems and all(p.startswith(shard.file) for p in problems)
    assert f"sample {sample} ({shard.ids[sample]}) damaged at offset {shard.offsets[sample]}" in problems[0]
    if copy.format == "tfrecord":  # the record CRC catches it too, at the same record
        assert any(f"CRC mismatch) at offset {shard.offsets[sample]}" in p for p in problems)
    assert main(["verify", copy.root]) == 1
    err = capsys.readouterr().err
    assert "DAMAGED" in err and shard.file in err and str(shard.offsets[sample]) in err


def test_truncated_and_missing_shards(copy):

    first, second = pathlib.Path(copy.path(copy.shards[0])), pathlib.Path(copy.path(copy.shards[1]))
    first.write_bytes(first.read_bytes()[: copy.shards[0].offsets[2] + 40])
    second.unlink()
    problems = verify(copy)
    assert any(p.startswith(copy.shards[0].file) and "truncated at offset" in p for p in problems)
    assert any(p.startswith(copy.shards[1].file) and "missing" in p for p in problems)
    assert verify(copy, deep=False)  # the quick check sees it as well


def test_manifest_that_lies_about_ids_is_caught(copy):
    copy.shards[0].ids[1] = "someone-else"
    problems = verify(copy)
    assert any("sample 1" in p and "someone-else" in p for p in problems)
    assert len(problems) == 1, "no second, false claim that the file ended early"


def test_verify_of_converts_out_folder_checks_every_size_in_it(tmp_path, capsys):
    from test_convert_inputs import _tiny_source

    _tiny_source(tmp_path, n=6, csv="t.csv")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "t.csv"), str(out), "--size", "16,32",
                 "--folds", "2", "--group-col", "", "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0  # was: "no manifest here; run `kitpkg convert`"
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"OK {out / '16'}", f"OK {out / '32'}"]
    shard = next((out / "32").glob("train-*.tfrec"))
    _flip(shard, shard.stat().st_size // 2)
    assert main(["verify", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"OK {out / '16'}" in captured.out and f"DAMAGED {shard.name}" in captured.err
