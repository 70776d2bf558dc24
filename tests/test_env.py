"""Platform detection (Kaggle before Colab before local), folders per platform, the machine's resources."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kitpkg import env as kenv
from kitpkg.errors import KitError

NOTHING = lambda name: False  # noqa: E731  (no google.colab importable)


@pytest.mark.parametrize("environ, importable, expected", [
    ({}, NOTHING, "local"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, NOTHING, "kaggle"),
    ({"KAGGLE_URL_BASE": "https://www.kaggle.com"}, NOTHING, "kaggle"),
    # Kaggle's image also sets Colab's variables (and may ship google.colab): Kaggle must win
    ({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "COLAB_RELEASE_TAG": "x", "COLAB_BACKEND_VERSION": "1"},
     lambda n: True, "kaggle"),
    ({"COLAB_RELEASE_TAG": "release-colab_20260101"}, NOTHING, "colab"),
    ({"COLAB_BACKEND_VERSION": "1.0"}, NOTHING, "colab"),
    ({}, lambda name: name == "google.colab", "colab"),
    ({"KITPKG_PLATFORM": "local", "KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, NOTHING, "local"),
    ({"KITPKG_PLATFORM": "Colab"}, NOTHING, "colab"),
    ({"KITPKG_PLATFORM": "kaggle", "COLAB_RELEASE_TAG": "x"}, NOTHING, "kaggle"),
])
def test_detect_platform(environ, importable, expected):
    assert kenv.detect_platform(environ, importable) == expected


def test_unknown_override_is_a_kit_error():
    with pytest.raises(KitError, match="KITPKG_PLATFORM='sagemaker'"):
        kenv.detect_platform({"KITPKG_PLATFORM": "sagemaker"}, NOTHING)


def test_layout_per_platform(tmp_path):
    roots = {"KITPKG_KAGGLE_ROOT": str(tmp_path / "k"), "KITPKG_DRIVE_ROOT": str(tmp_path / "d"),
             "KITPKG_LOCAL_ROOT": str(tmp_path / "c")}
    kaggle = kenv.layout("kaggle", "mel", roots)
    assert kaggle.run_dir == tmp_path / "k/working/mel/runs" and kaggle.kaggle_input == tmp_path / "k/input"
    assert kaggle.cache_dir is None  # /kaggle/input is local disk already
    colab = kenv.layout("colab", "mel", roots)
    assert colab.run_dir == tmp_path / "d/MyDrive/mel/runs" and colab.data_dir == tmp_path / "d/MyDrive/mel/data"
    assert colab.cache_dir == tmp_path / "c/mel/cache" and colab.scratch_dir == tmp_path / "c/mel/scratch"
    local = kenv.layout("local", "mel", roots)
    assert local.run_dir == tmp_path / "c/mel/runs" and local.drive_mount is None
    assert kenv.layout("colab", "mel", {}).drive_mount == Path("/content/drive")
    with pytest.raises(KitError, match="project"):
        kenv.layout("local", "../escape", roots)


def test_gpu_summary_from_nvidia_smi_without_cuda():
    def smi(cmd, **kw):
        assert cmd[0] == "nvidia-smi" and "--query-gpu=name,memory.total" in cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="Tesla T4, 15360 MiB\nTesla T4, 15360 MiB\n")

    def broken(cmd, **kw):
        raise FileNotFoundError("nvidia-smi")

    assert kenv.gpu_summary(smi) == "2 x Tesla T4 (15360 MiB)"
    assert kenv.gpu_summary(broken) == "none"
    assert kenv.gpu_summary(lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, stdout="")) == "none"


def test_internet_probe_is_injectable(monkeypatch):
    assert kenv.has_internet({"KITPKG_INTERNET": "1"}) is True
    assert kenv.has_internet({"KITPKG_INTERNET": "0"}) is False
    tried = []

    def refuse(addr, timeout):
        tried.append(addr)
        raise OSError("unreachable")

    monkeypatch.setattr(kenv.socket, "create_connection", refuse)
    assert kenv.has_internet({}) is False and len(tried) == 2
