"""Checkpoint IO: atomic publish, truncation detection, newest-intact selection, pruning order."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from kitpkg.train.checkpoint import is_intact, latest_intact, load_checkpoint, publish, resumable


def _ckpt(path, value):
    torch.save({"state_dict": {"w": torch.full((256,), float(value))}, "step": value}, path)
    return path


def test_publish_is_complete_or_absent(tmp_path):
    local = _ckpt(tmp_path / "local.ckpt", 1)
    dest = tmp_path / "drive" / "run" / "ckpt-00000001-0.ckpt"
    publish(local, dest)
    assert dest.read_bytes() == local.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp file left beside it
    assert load_checkpoint(dest)["step"] == 1


def test_truncated_newest_is_skipped(tmp_path):
    for step in (2, 4, 6):
        _ckpt(tmp_path / f"ckpt-{step:08d}-0.ckpt", step)
    _ckpt(tmp_path / "ckpt-00000006-1.ckpt", 7)  # after validation at the same step: written later
    (tmp_path / "best.ckpt").write_bytes(b"")  # not a resumable name
    assert [p.name[5:13] + p.name[13:15] for p in resumable(tmp_path)] == ["00000002-0", "00000004-0",
                                                                            "00000006-0", "00000006-1"]
    assert load_checkpoint(latest_intact(tmp_path))["step"] == 7
    newest = tmp_path / "ckpt-00000006-1.ckpt"
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) - 100)
    assert not is_intact(newest)
    with pytest.warns(RuntimeWarning, match="truncated or damaged"):
        assert load_checkpoint(latest_intact(tmp_path))["step"] == 6
    flipped = tmp_path / "ckpt-00000006-0.ckpt"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the tensor data: caught by the zip CRCs
    flipped.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning):
        assert load_checkpoint(latest_intact(tmp_path))["step"] == 4


def test_no_checkpoint(tmp_path):
    assert latest_intact(tmp_path / "missing") is None


def test_short_copy_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    import shutil

    local = _ckpt(tmp_path / "local.ckpt", 1)
    dest = tmp_path / "drive" / "ckpt-00000002-0.ckpt"
    dest.parent.mkdir()
    previous = _ckpt(dest.parent / "ckpt-00000001-0.ckpt", 0)

    def short_copy(src, dst, length=0):  # a full Drive / disk: the copy stops early without an error
        dst.write(src.read()[:100])

    monkeypatch.setattr(shutil, "copyfileobj", short_copy)
    with pytest.raises(OSError, match=r"copy is 100 bytes, expected \d+; disk full\?"):
        publish(local, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == [previous.name]  # no partial file, no half checkpoint


class _Payload:
    """Unpickling it runs code: it writes a marker file (what a hostile checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_the_safe_loader_refuses_is_skipped_never_unpickled(tmp_path):
    from kitpkg.errors import KitError
    from kitpkg.train import checkpoint as C

    marker = tmp_path / "pwned"
    good = _ckpt(tmp_path / "ckpt-00000002-1.ckpt", 2)
    crafted = tmp_path / "ckpt-00000004-0.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4)}, "evil": _Payload(marker)}, crafted)  # a valid zip, CRCs fine
    assert not marker.exists() and not is_intact(crafted)
    with pytest.warns(RuntimeWarning, match=r"ckpt-00000004-0.ckpt is truncated or damaged, or holds objects"):
        assert latest_intact(tmp_path) == good
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file: a second look is silent
        assert latest_intact(tmp_path) == good
    with pytest.raises(KitError, match=r"ckpt-00000004-0.ckpt: not a checkpoint kitpkg can load safely"):
        load_checkpoint(crafted)
    best = tmp_path / C.BEST
    torch.save(_Payload(marker), best)
    from kitpkg.train.checkpoint import best_checkpoint

    with pytest.warns(RuntimeWarning, match=r"best.ckpt is truncated or damaged.*newest intact checkpoint instead"):
        assert best_checkpoint(tmp_path) == good
    assert not marker.exists()
