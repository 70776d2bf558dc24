"""What `pip install kitpkg` puts on Colab/Kaggle: only what kitpkg imports, nothing that fights the platform."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# distribution -> the module kitpkg imports it as (the default: the name with - -> _)
MODULES = {"opencv-python-headless": "cv2", "pillow": "PIL", "pyyaml": "yaml", "protobuf": "google.protobuf",
           "pytorch-lightning": "pytorch_lightning"}


def _setup_lists():
    """install_requires and extras_require as setup.py writes them (read with ast: setup() is not run)."""
    found = {}
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("install_requires", "extras_require"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return [Requirement(r) for r in found["install_requires"]], found["extras_require"]


def _imported_modules():
    names = set()
    for path in (ROOT / "kitpkg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def test_install_requires_holds_only_what_kitpkg_imports():
    requires, _ = _setup_lists()
    imported = _imported_modules()
    unused = []
    for req in requires:
        module = MODULES.get(req.name.lower(), req.name.lower().replace("-", "_"))
        if not any(name == module or name.startswith(module + ".") for name in imported):
            unused.append(req.name)
    assert not unused, f"install_requires entries never imported under kitpkg/: {unused} (move them to an extra)"


def test_no_tensorflow_for_users_and_protobuf_new_enough():
    requires, extras = _setup_lists()
    assert "tf" not in extras  # tensorflow-cpu beside the platform's tensorflow breaks it
    everything = [r.name for r in requires] + [Requirement(r).name for name, reqs in extras.items() if name != "test"
                                               for r in reqs]
    assert not [n for n in everything if n.startswith("tensorflow")], everything
    (protobuf,) = [r for r in requires if r.name == "protobuf"]
    floor = min(Version(s.version) for s in protobuf.specifier if s.operator == ">=")
    assert floor >= Version("4.22"), protobuf  # message_factory.GetMessageClass
    assert "webdataset" in {Requirement(r).name for r in extras["test"]}  # interop tests keep it


def test_pyproject_declares_its_build_system():
    tomllib = pytest.importorskip("tomllib")
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert build["build-backend"] == "setuptools.build_meta"
    assert any(r.startswith("setuptools") for r in build["requires"])


@pytest.mark.slow
def test_wheel_builds_without_warnings_and_ships_the_templates(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to setup.py
    shutil.copytree(ROOT / "kitpkg", src / "kitpkg", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "absent from the `packages` configuration" not in done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("kitpkg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"kitpkg/configs/demo.yaml", "kitpkg/configs/effnet_b4_384.yaml", "kitpkg/augment/presets/light.yaml",
            "kitpkg/augment/presets/isic.yaml"} <= names
