"""Helpers that fake Colab and Kaggle for tests: a fake google.colab module, temp roots, a clean environment."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Dict, List

FAKES = Path(__file__).resolve().parent  # put this on PYTHONPATH to make the fake google.colab importable
PLATFORM_VARS = ("KITPKG_PLATFORM", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "COLAB_RELEASE_TAG",
                 "COLAB_BACKEND_VERSION", "KITPKG_KAGGLE_ROOT", "KITPKG_DRIVE_ROOT", "KITPKG_LOCAL_ROOT")


def install_fake_colab(monkeypatch, log: Path, mode: str = "ok"):
    """Make `google.colab` (with a recording fake `drive`) importable in this process until the test ends."""
    modules = {}
    for name, rel in (("google.colab", "google/colab/__init__.py"), ("google.colab.drive", "google/colab/drive.py")):
        spec = importlib.util.spec_from_file_location(name, FAKES / rel)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(modules["google.colab"], "drive", modules["google.colab.drive"], raising=False)
    monkeypatch.setenv("FAKE_COLAB_LOG", str(log))
    monkeypatch.setenv("FAKE_COLAB_MODE", mode)
    return modules["google.colab.drive"]


def calls(log: Path) -> List[Dict]:
    """The fake drive's recorded calls."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def clean_platform_env(monkeypatch) -> None:
    """Remove every variable that decides the platform, and answer the internet probe without a network."""
    for name in PLATFORM_VARS:
        monkeypatch.setenv(name, "")  # recorded, so whatever setup() sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("KITPKG_INTERNET", "0")


def fake_platform_env(platform: str, root: Path) -> Dict[str, str]:
    """Environment variables that run `platform` with temp folders standing in for /kaggle, /content and Drive."""
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARS}
    env.update(KITPKG_INTERNET="0", KITPKG_NO_PROGRESS="1")
    if platform == "kaggle":
        # Kaggle's image also sets COLAB_* variables: keep one so detection order is exercised
        env.update(KAGGLE_KERNEL_RUN_TYPE="Interactive", COLAB_RELEASE_TAG="release-colab-fake",
                   KITPKG_KAGGLE_ROOT=str(root / "kaggle"))
        (root / "kaggle" / "input").mkdir(parents=True, exist_ok=True)
    elif platform == "colab":
        env.update(COLAB_RELEASE_TAG="release-colab-fake", KITPKG_DRIVE_ROOT=str(root / "drive"),
                   KITPKG_LOCAL_ROOT=str(root / "content"), FAKE_COLAB_LOG=str(root / "colab-calls.jsonl"),
                   PYTHONPATH=os.pathsep.join(p for p in (str(FAKES), env.get("PYTHONPATH", "")) if p))
    else:
        env.update(KITPKG_PLATFORM="local", KITPKG_LOCAL_ROOT=str(root / "local"))
    return env
