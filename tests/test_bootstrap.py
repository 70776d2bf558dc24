"""The notebook's bootstrap: setup() on each platform, and the scan of attached datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes.fake_env import calls, clean_platform_env, install_fake_colab
from kitpkg import env as kenv
from kitpkg.notebook import bootstrap
from kitpkg.notebook.attached import Attached, find_attached

NOTHING = lambda name: False  # noqa: E731  (no google.colab importable)


def test_find_attached_walks_nested_datasets(tmp_path):
    inp = tmp_path / "input"
    for folder in ("melanoma-shards/384", "melanoma-shards/512", "other/deep/a/b/256"):
        (inp / folder).mkdir(parents=True)
        (inp / folder / "manifest.json").write_text("{}")
    (inp / "wheels").mkdir()
    (inp / "wheels" / "kitpkg-0.1.0-py3-none-any.whl").write_bytes(b"")
    (inp / "wheels" / "timm-1.0.0-py3-none-any.whl").write_bytes(b"")
    (inp / "w" / "x").mkdir(parents=True)
    (inp / "w" / "x" / "efficientnet_b0.safetensors").write_bytes(b"")
    found = find_attached(inp)
    assert found.manifests == (inp / "melanoma-shards/384", inp / "melanoma-shards/512", inp / "other/deep/a/b/256")
    assert found.wheelhouses == (inp / "wheels",)
    assert found.weights == (inp / "w/x/efficientnet_b0.safetensors",)
    assert find_attached(tmp_path / "missing") == Attached()


@pytest.fixture(autouse=True)
def steady_resources(monkeypatch):
    """Free RAM and disk drift between two calls; pin them so re-runs can be compared exactly."""
    monkeypatch.setattr(kenv, "ram_gib", lambda: (20.0, 24.0))
    monkeypatch.setattr(kenv, "free_disk_gib", lambda path: 70.0)


def _summary_lines(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if line.startswith("kitpkg "))


def _tree(root: Path):
    return sorted((str(p.relative_to(root)), p.is_dir()) for p in root.rglob("*"))


def test_setup_on_kaggle_finds_inputs_and_is_idempotent(tmp_path, monkeypatch, capsys):
    clean_platform_env(monkeypatch)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "also-set-on-kaggle")
    monkeypatch.setenv("KITPKG_KAGGLE_ROOT", str(tmp_path))
    shards = tmp_path / "input" / "my-shards" / "384"
    shards.mkdir(parents=True)
    (shards / "manifest.json").write_text('{"image_size": 384}')
    env = bootstrap.setup(project="mel")
    first = capsys.readouterr().out
    assert env.platform == "kaggle" and env.run_dir == tmp_path / "working/mel/runs" and env.run_dir.is_dir()
    assert env.attached.manifests == (shards,) and env.find_manifest(384) == shards
    assert env.find_manifest(512) is None
    assert "platform" in first and "kaggle" in first and "internet" in first and str(env.run_dir) in first
    tree, environ = _tree(tmp_path), dict(os.environ)
    again = bootstrap.setup(project="mel")
    assert capsys.readouterr().out == first  # the summary again, nothing else
    assert again == env and _tree(tmp_path) == tree and dict(os.environ) == environ


def test_setup_on_colab_mounts_drive_once(tmp_path, monkeypatch, capsys):
    clean_platform_env(monkeypatch)
    log = tmp_path / "calls.jsonl"
    install_fake_colab(monkeypatch, log)  # google.colab importable: that alone means Colab
    monkeypatch.setenv("KITPKG_DRIVE_ROOT", str(tmp_path / "drive"))
    monkeypatch.setenv("KITPKG_LOCAL_ROOT", str(tmp_path / "content"))
    env = bootstrap.setup(project="mel", mount_timeout_s=30)
    first = capsys.readouterr().out
    assert env.platform == "colab"
    assert [c["call"] for c in calls(log)] == ["mount"] and calls(log)[0]["timeout_ms"] == 30000
    assert env.run_dir == tmp_path / "drive/MyDrive/mel/runs" and env.run_dir.is_dir()
    assert env.cache_dir == tmp_path / "content/mel/cache" and env.cache_dir.is_dir()
    assert "KITPKG_CACHE_DIR" not in os.environ  # the cache reaches the trainer as data.cache_dir, not a global
    assert "mounting Google Drive" in first and "internet" in first
    tree, environ = _tree(tmp_path), dict(os.environ)
    bootstrap.setup(project="mel", mount_timeout_s=30)
    second = capsys.readouterr().out
    assert len(calls(log)) == 1  # not remounted
    assert "mounting" not in second and second == _summary_lines(first)
    assert _tree(tmp_path) == tree and dict(os.environ) == environ


def test_setup_local_default(tmp_path, monkeypatch, capsys):
    clean_platform_env(monkeypatch)
    monkeypatch.setattr(kenv, "importable", NOTHING)
    monkeypatch.setattr(kenv.detect_platform, "__defaults__", (NOTHING,))
    monkeypatch.chdir(tmp_path)
    env = bootstrap.setup(project="demo")
    assert env.platform == "local" and env.run_dir == tmp_path / "demo/runs" and env.data_dir.is_dir()
    assert env.find_manifest() is None
    (env.data_dir / "64").mkdir()
    (env.data_dir / "64" / "manifest.json").write_text("{}")
    assert env.find_manifest(64) == env.data_dir / "64"
