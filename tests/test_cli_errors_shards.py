"""Every mistake a user can make with the shard commands ends in one line on stderr and exit status 2, never a
traceback: outputs that are files, damaged or hand-edited manifests, a full disk, CSVs and sources with nothing in
them."""
from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from kitpkg.cli import main
from kitpkg.shards import writer
from test_convert_inputs import _tiny_source


def _one_line_error(capsys, argv, *needles):
    """Run the real CLI; assert exit 2 with one stderr line holding every needle; return that line."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert str(needle) in err, err
    return err


def _convert_args(root, out):
    return ["convert", root / "src", root / "t.csv", out, "--size", "32", "--folds", "2", "--group-col", "",
            "--workers", "1", "--shard-samples", "2", "--no-progress"]


@pytest.fixture
def tiny(tmp_path):
    _tiny_source(tmp_path, n=6, csv="t.csv")
    return tmp_path


def test_output_paths_that_are_files(tiny, capsys):
    file = tiny / "a_file"
    file.write_text("x")
    _one_line_error(capsys, _convert_args(tiny, file), file, "a file, not a folder")
    _one_line_error(capsys, ["demo-data", file, "--patients", "2"], file, "a file, not a folder")
    _one_line_error(capsys, ["demo", "--out", file], file, "a file, not a folder")
    _one_line_error(capsys, _convert_args(tiny, file / "below"), file / "below", "cannot create")
    assert file.read_text() == "x"


def test_demo_data_with_no_patients(tmp_path, capsys):
    _one_line_error(capsys, ["demo-data", tmp_path / "d", "--patients", "0"], "--patients must be ≥ 1, not 0")
    assert not (tmp_path / "d").exists()


def test_verify_of_a_file_names_it(tiny, capsys):
    assert main([str(a) for a in _convert_args(tiny, tiny / "out")]) == 0
    shard = next((tiny / "out" / "32").glob("*.tfrec"))
    _one_line_error(capsys, ["verify", shard], shard, "a file, not a shard folder")
    # and through the real console entry point, as a user runs it
    proc = subprocess.run([sys.executable, "-m", "kitpkg", "verify", str(shard)], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def _edited(change):
    """A damage function: the manifest's JSON with `change(data)` applied, as a hand edit would leave it."""
    def damage(text):
        data = json.loads(text)
        change(data)
        return json.dumps(data)
    return damage


@pytest.mark.parametrize("damage, needles", [
    (lambda text: text[: len(text) // 2], ["cut short"]),
    (_edited(lambda d: d.pop("schema")), ["lacks the key 'schema'"]),
    (_edited(lambda d: d.update(lable_col="target")), ["unknown key 'lable_col'"]),
    (_edited(lambda d: d["shards"][0].update(samples=d["shards"][0]["samples"] + 1)), ["shards[0]", "'samples' says"]),
    (_edited(lambda d: d["shards"][0].update(fold="three")), ["shards[0]", "'fold' must be an integer or null"]),
    (_edited(lambda d: d["shards"][1].pop("sha256")), ["shards[1]", "lacks the key 'sha256'"]),
], ids=["cut-short", "key-missing", "unknown-key", "wrong-sample-count", "fold-not-a-number", "shard-key-missing"])
def test_damaged_or_hand_edited_manifests(tiny, capsys, damage, needles):
    assert main([str(a) for a in _convert_args(tiny, tiny / "out")]) == 0
    path = tiny / "out" / "32" / "manifest.json"
    path.write_text(damage(path.read_text()))
    _one_line_error(capsys, ["verify", tiny / "out" / "32"], path, *needles)
    _one_line_error(capsys, ["verify", tiny / "out"], path, *needles)  # convert's OUT: the same one line


def test_disk_full_during_convert_says_so_and_a_rerun_continues(tiny, capsys, monkeypatch):
    out = tiny / "out"
    real_write, written = writer._HashingFile.write, []

    def write(self, data):
        if len(written) >= 2 and self.bytes == 0:  # the third shard's first write: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.bytes == 0:
            written.append(1)
        return real_write(self, data)

    monkeypatch.setattr(writer._HashingFile, "write", write)
    _one_line_error(capsys, _convert_args(tiny, out), out, "the disk is full", "re-run the same command")
    assert not list((out / "32").glob(".*.tmp")), "no half-written shard is left behind"
    assert not (out / "32" / "manifest.json").exists()
    monkeypatch.setattr(writer._HashingFile, "write", real_write)
    assert main([str(a) for a in _convert_args(tiny, out)]) == 0
    assert "2 kept from an earlier run" in capsys.readouterr().err
    assert main(["verify", str(out)]) == 0


def test_a_header_only_csv_or_an_empty_source_is_an_error_naming_it(tiny, capsys):
    (tiny / "t.csv").write_text("image_name,target\n")
    _one_line_error(capsys, _convert_args(tiny, tiny / "out"), tiny / "t.csv", "header but no rows")
    (tiny / "t.csv").write_text("image_name,target\nzz1,0\nzz2,1\n")
    _one_line_error(capsys, _convert_args(tiny, tiny / "out"), "none of its 2 rows", "zz1: image missing")
    (tiny / "empty").mkdir()
    _one_line_error(capsys, ["convert", tiny / "empty", tiny / "t.csv", tiny / "out"], tiny / "empty",
                    "no image files (.jpg")
    assert not (tiny / "out").exists(), "nothing is written for an input that holds nothing"


def test_a_csv_with_two_columns_of_the_same_name_is_refused(tiny, capsys):
    (tiny / "t.csv").write_text("image_name,target,target\n" + "".join(f"a{i},{i % 2},0\n" for i in range(6)))
    _one_line_error(capsys, _convert_args(tiny, tiny / "out"), tiny / "t.csv", "two columns named 'target'")


def test_index_refuses_a_negative_fold_count(tiny, capsys):
    assert main([str(a) for a in _convert_args(tiny, tiny / "out")]) == 0
    _one_line_error(capsys, ["index", tiny / "out" / "32", "--out", tiny / "idx", "--folds", "-3"],
                    "--folds must be ≥ 1")
    assert not (tiny / "idx").exists()
