"""Offline Kaggle: the dependency plan never ships torch; a clean venv installs the kit from the wheelhouse offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from kitpkg.errors import KitError
from kitpkg.notebook import wheelhouse as wh

FAKE_METADATA = {
    "kitpkg": ["torch>=2.1", "timm>=0.9", "numpy>=1.23", "pytest; extra == 'test'", "pywin32; sys_platform == 'win32'",
               "Web_Dataset>=0.2"],
    "timm": ["torch", "torchvision", "huggingface_hub", "pyyaml"],
    "huggingface-hub": ["filelock", "nvidia-cublas-cu12; sys_platform == 'linux'"],
    "web-dataset": ["braceexpand", "numpy"],
    "braceexpand": [], "pyyaml": [], "filelock": [], "numpy": [],
}


def test_dependency_closure_follows_requirements_but_never_torch():
    plan = wh.dependency_closure("kitpkg", exclude=["NumPy"], requires=FAKE_METADATA.get, version=lambda n: "1.0")
    assert sorted(plan) == ["braceexpand", "filelock", "huggingface-hub", "kitpkg", "pyyaml", "timm", "web-dataset"]
    with pytest.raises(KitError, match="braceexpand: not installed"):
        wh.dependency_closure("kitpkg", requires=lambda n: None if n == "braceexpand" else FAKE_METADATA.get(n),
                              version=lambda n: "1.0")


def test_real_plan_ships_what_kaggle_lacks():
    plan = wh.dependency_closure("kitpkg", exclude=wh.KAGGLE_PREINSTALLED)
    for name in ("kitpkg", "timm", "pytorch-lightning", "torchmetrics", "webdataset", "simplejpeg", "crc32c", "gdown"):
        assert name in plan
    assert not {"torch", "torchvision", "numpy", "pandas", "pillow"} & set(plan)
    assert not any(n.startswith("nvidia-") for n in plan)


def test_dataset_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    path = wh.write_dataset_metadata(tmp_path / "shards", "melanoma-384", title="Melanoma shards 384")
    assert json.loads(path.read_text()) == {"title": "Melanoma shards 384", "id": "alice/melanoma-384",
                                            "licenses": [{"name": "CC0-1.0"}]}
    with pytest.raises(KitError, match="--slug 'Bad Slug'"):
        wh.write_dataset_metadata(tmp_path, "Bad Slug")


def test_wheelhouse_downloads_pinned_binary_wheels_without_resolving(tmp_path, monkeypatch):
    seen = []

    def runner(cmd, **kwargs):
        if "download" in cmd:  # PyPI is not for tests: record what would be fetched
            seen.append(cmd)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.run(cmd, **kwargs)

    monkeypatch.setattr(wh, "build_kit_wheel", lambda out, runner: (out / "kitpkg-0.1.0-py3-none-any.whl"))
    wh.build_wheelhouse(tmp_path, user="alice", runner=runner, python_version="3.11",
                        platform_tag="manylinux2014_x86_64", exclude=["gdown"])
    (cmd,) = seen
    assert {"--no-deps", "--only-binary=:all:", "--python-version", "manylinux2014_x86_64"} <= set(cmd)
    pins = {a.split("==")[0] for a in cmd if "==" in a}
    assert {"timm", "pytorch-lightning", "webdataset"} <= pins
    assert not pins & {"torch", "torchvision", "gdown", "kitpkg", "numpy"}


@pytest.mark.slow
def test_clean_venv_installs_kit_offline_from_wheelhouse(tmp_path):
    out = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "kitpkg", "wheelhouse", str(out), "--no-deps", "--user", "alice"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--no-index" in done.stdout and "kaggle datasets create -p" in done.stdout
    (wheel,) = out.glob("kitpkg-*.whl")
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == "alice/kitpkg-wheels"
    # A clean venv (no site-packages of ours). It has no torch, which Kaggle's image provides and the wheelhouse
    # never ships, so the kit's own wheel is installed with --no-deps; dependency wheels are covered above.
    clean = tmp_path / "clean"
    venv.create(clean, with_pip=True, symlinks=True)
    env = {**os.environ, "PATH": f"{clean / 'bin'}{os.pathsep}{os.environ['PATH']}", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run(["sh", str(out / "install.sh"), "--no-deps"], env=env, capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    assert install.returncode == 0, install.stderr
    # Only modules without third-party imports can run here; every source file must have been installed.
    check = subprocess.run([str(clean / "bin" / "python"), "-c",
                            "import kitpkg, kitpkg.env, kitpkg.notebook.fetch; print(kitpkg.__file__)"],
                           env=env, capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    installed = Path(check.stdout.strip()).parent
    assert str(installed).startswith(str(clean)) and installed.parent.name == "site-packages"
    source = Path(wh.__file__).resolve().parents[1]
    expected = {p.relative_to(source) for p in source.rglob("*") if p.suffix in (".py", ".yaml")}
    assert expected <= {p.relative_to(installed) for p in installed.rglob("*")}
    assert "kitpkg.cli" in (clean / "bin" / "kitpkg").read_text()  # the console script


def test_timm_weights_round_trip_offline(tmp_path):
    import torch

    path = wh.export_timm_weights("test_resnet", tmp_path, pretrained=False)  # pretrained=False: no hub in tests
    assert path.name == "test_resnet.safetensors" and not list(tmp_path.glob("*.tmp"))
    model = wh.create_offline_model("test_resnet", path)
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_cli_dataset_meta_and_help(tmp_path, capsys):
    from kitpkg.cli import main

    (tmp_path / "384").mkdir()
    assert main(["dataset-meta", str(tmp_path / "384"), "--slug", "mel-384", "--user", "bob"]) == 0
    assert json.loads((tmp_path / "384" / "dataset-metadata.json").read_text())["id"] == "bob/mel-384"
    assert main(["dataset-meta", str(tmp_path), "--slug", "Nope!"]) == 2
    assert "--slug 'Nope!'" in capsys.readouterr().err
    for command in ("fetch", "wheelhouse", "dataset-meta", "weights"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "show this help message" in capsys.readouterr().out
