"""Offline Kaggle: the dependency plan never ships torch; a clean venv installs the kit from the wheelhouse offline."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import urllib.request
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
    for name in ("kitpkg", "timm", "pytorch-lightning", "torchmetrics", "simplejpeg", "crc32c", "gdown"):
        assert name in plan
    assert not {"torch", "torchvision", "numpy", "pandas", "pillow"} & set(plan)
    assert not any(n.startswith("nvidia-") for n in plan)


def test_dataset_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    (tmp_path / "shards").mkdir()
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
                        platforms=["manylinux2014_x86_64"], exclude=["gdown"])
    (cmd,) = seen
    assert {"--no-deps", "--only-binary=:all:", "--python-version", "manylinux2014_x86_64"} <= set(cmd)
    pins = {a.split("==")[0] for a in cmd if "==" in a}
    assert {"timm", "pytorch-lightning", "simplejpeg"} <= pins
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


def _recording_runner(seen):
    def runner(cmd, **kwargs):
        if "download" in cmd:  # PyPI is not for these tests: record what would be fetched
            seen.append(cmd)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.run(cmd, **kwargs)

    return runner


def _flag_values(cmd, flag):
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def test_wheelhouse_targets_kaggles_python_by_default(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(wh, "build_kit_wheel", lambda out, runner: (out / "kitpkg-0.1.0-py3-none-any.whl"))
    wh.build_wheelhouse(tmp_path, user="alice", runner=_recording_runner(seen))  # no target given: Kaggle's
    (cmd,) = seen
    assert _flag_values(cmd, "--python-version") == ["3.12"] and "--only-binary=:all:" in cmd
    platforms = _flag_values(cmd, "--platform")
    # pip takes each tag literally: the PEP 600 names and their legacy aliases must all be listed
    assert {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(
        platforms)
    assert not any("2_29" in p or "2_35" in p for p in platforms)  # margin below Kaggle's glibc
    assert "Python 3.12" in capsys.readouterr().out
    from kitpkg.cli import build_parser

    args = build_parser().parse_args(["wheelhouse", "out", "--python-version", "3.13", "--platform", "a", "--platform",
                                      "b"])
    assert (args.python_version, args.platforms) == ("3.13", ["a", "b"])
    assert build_parser().parse_args(["wheelhouse", "out"]).python_version == wh.KAGGLE_PYTHON
    with pytest.raises(KitError, match="--python-version '312'"):
        wh.build_wheelhouse(tmp_path, python_version="312", runner=_recording_runner(seen))


def test_dependency_markers_are_judged_for_the_target_python():
    meta = {"kitpkg": ["old-backport; python_version < '3.12'", "new-only; python_version >= '3.12'",
                       "winonly; sys_platform == 'win32'"], "old-backport": [], "new-only": [], "winonly": []}
    for version, expected in (("3.11", "old-backport"), ("3.12", "new-only")):
        markers = wh.target_environment(version, wh.KAGGLE_PLATFORMS)
        plan = wh.dependency_closure("kitpkg", requires=meta.get, version=lambda n: "1.0", markers=markers)
        assert sorted(plan) == sorted(["kitpkg", expected])


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/crc32c/", timeout=5).close()
        return True
    except OSError:
        return False


def _other_python():
    """(major.minor, interpreter path or None): a Python other than the one running the tests; Kaggle's if possible."""
    version = wh.KAGGLE_PYTHON if f"{sys.version_info[0]}.{sys.version_info[1]}" != wh.KAGGLE_PYTHON else "3.13"
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    return version, (found[-1] if found else None)


def _supported_tags(python, version):
    """The interpreter's own tag list (pip's vendored packaging), else the one computed for Kaggle's platforms."""
    from packaging import tags

    if python:
        done = subprocess.run([python, "-c", "from pip._vendor.packaging import tags; "
                                             "print('\\n'.join(str(t) for t in tags.sys_tags()))"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return {tags.Tag(*line.split("-")) for line in done.stdout.split()}
    v = tuple(int(x) for x in version.split("."))
    return set(tags.cpython_tags(v, platforms=wh.KAGGLE_PLATFORMS)) | set(
        tags.compatible_tags(v, platforms=wh.KAGGLE_PLATFORMS))


@pytest.mark.slow
def test_wheelhouse_for_another_python_installs_offline_there(tmp_path):
    """Built here (3.11) for Kaggle's 3.12: every wheel's tags fit 3.12, and a 3.12 venv installs them offline."""
    if not _pypi_reachable():
        pytest.skip("PyPI cannot be reached from here")
    from packaging.utils import parse_wheel_filename

    version, python = _other_python()
    keep = {"kitpkg", "simplejpeg", "crc32c", "numpy"}  # a small subset: two binary deps and what they need
    others = set(wh.dependency_closure("kitpkg")) - keep
    out = tmp_path / "wheels"
    target = {} if version == wh.KAGGLE_PYTHON else {"python_version": version}  # Kaggle's is the default
    wh.build_wheelhouse(out, user="alice", exclude=others, keep_preinstalled=True, **target)
    wheels = sorted(out.glob("*.whl"))
    assert {parse_wheel_filename(w.name)[0] for w in wheels} == keep
    supported = _supported_tags(python, version)
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    for wheel in wheels:
        name, _, _, wheel_tags = parse_wheel_filename(wheel.name)
        assert wheel_tags & supported, wheel.name  # installable on the target
        if name == "kitpkg":
            assert {str(t) for t in wheel_tags} == {"py3-none-any"}
        else:
            assert not any(t.interpreter == here for t in wheel_tags), wheel.name  # not this interpreter's build
    if python is None:
        return
    target = tmp_path / "target"
    subprocess.run([python, "-m", "venv", str(target)], check=True, timeout=120)
    env = {**os.environ, "PATH": f"{target / 'bin'}{os.pathsep}{os.environ['PATH']}", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    # install.sh as the Kaggle cell runs it; --no-deps: this venv lacks torch, which Kaggle has and we never ship
    install = subprocess.run(["sh", str(out / "install.sh"), "--no-deps", "simplejpeg", "crc32c", "numpy"], env=env,
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert install.returncode == 0, install.stderr
    check = subprocess.run([str(target / "bin" / "python"), "-c",
                            "import sys, numpy, simplejpeg, crc32c, kitpkg.env; "
                            "a = numpy.zeros((16, 16, 3), numpy.uint8); "
                            "assert simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(a)).shape == a.shape; "
                            "assert crc32c.crc32c(b'123456789') == 0xE3069283; print(sys.version_info[:2])"],
                           env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(tuple(int(x) for x in version.split(".")))


def test_cli_weights_of_an_unknown_model_is_one_line(tmp_path, capsys):
    from kitpkg.cli import main

    assert main(["weights", "efficientnet_bb0", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "efficientnet_bb0: not a timm model name" in err and "efficientnet_b0" in err
    assert not (tmp_path / "w").exists()  # nothing written before the name was checked
    (tmp_path / "file").write_text("x")
    assert main(["weights", "test_resnet", str(tmp_path / "file")]) == 2
    assert "a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_cli_dataset_meta_needs_an_existing_folder(tmp_path, kind):
    target = tmp_path / "shards"
    if kind == "file":
        target.write_text("not a folder")
    done = subprocess.run([sys.executable, "-m", "kitpkg", "dataset-meta", str(target), "--slug", "mel-384",
                           "--user", "bob"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and str(target) in done.stderr
    assert ("a file, not a folder" if kind == "file" else "no such folder") in done.stderr
    assert (target.is_file() if kind == "file" else not target.exists())  # never created
