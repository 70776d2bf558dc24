"""Drive on Colab: mount only when needed; timeouts and Errno 5 become advice; nothing half-created on failure."""
from __future__ import annotations

import errno

import pytest

from fakes.fake_env import calls, clean_platform_env, install_fake_colab
from kitpkg.notebook import bootstrap
from kitpkg.errors import KitError
from kitpkg.notebook.drive import drive_errors, is_mounted, mount_drive


def test_mounts_when_not_mounted_and_not_again(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    install_fake_colab(monkeypatch, log)
    point = tmp_path / "drive"
    assert not is_mounted(point)
    assert mount_drive(point, timeout_s=45) == point / "MyDrive"
    assert is_mounted(point)
    assert calls(log) == [{"call": "mount", "mountpoint": str(point), "timeout_ms": 45000, "force_remount": False}]
    mount_drive(point)
    assert len(calls(log)) == 1


@pytest.mark.parametrize("mode, words", [
    ("timeout", ["timeout during initial read", "mount_timeout_s=", "flush_and_unmount", "re-run"]),
    ("eio", ["Errno 5", "flush_and_unmount", "few hundred files", "local disk"]),
])
def test_mount_failures_become_advice(tmp_path, monkeypatch, mode, words):
    install_fake_colab(monkeypatch, tmp_path / "calls.jsonl", mode=mode)
    with pytest.raises(KitError) as info:
        mount_drive(tmp_path / "drive", timeout_s=60)
    for word in words:
        assert word in str(info.value)


def test_setup_mount_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    clean_platform_env(monkeypatch)
    install_fake_colab(monkeypatch, tmp_path / "calls.jsonl", mode="timeout")
    monkeypatch.setenv("KITPKG_DRIVE_ROOT", str(tmp_path / "drive"))
    monkeypatch.setenv("KITPKG_LOCAL_ROOT", str(tmp_path / "content"))
    with pytest.raises(KitError, match="mount_timeout_s=240"):
        bootstrap.setup(project="mel", mount_timeout_s=120, quiet=True)
    assert not (tmp_path / "drive" / "MyDrive").exists() and not (tmp_path / "content").exists()


def test_non_empty_mountpoint_is_refused(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    install_fake_colab(monkeypatch, log)
    (tmp_path / "drive").mkdir()
    (tmp_path / "drive" / "stray.txt").write_text("x")
    with pytest.raises(KitError, match="empty folder"):
        mount_drive(tmp_path / "drive")
    assert calls(log) == []


def test_without_colab_the_error_says_what_to_do(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "google.colab", None)  # None in sys.modules makes the import fail
    with pytest.raises(KitError, match="KITPKG_PLATFORM=local"):
        mount_drive(tmp_path / "drive")


def test_drive_errors_wraps_errno_5_only():
    with pytest.raises(KitError, match="Errno 5"):
        with drive_errors("/content/drive/MyDrive/mel"):
            raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(FileNotFoundError):
        with drive_errors("/x"):
            raise FileNotFoundError(errno.ENOENT, "No such file", "/x/y")
