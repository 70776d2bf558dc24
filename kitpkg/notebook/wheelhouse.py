"""Offline Kaggle: a wheelhouse (the kit's wheel + the dependency wheels Kaggle's image lacks) and dataset metadata.

Kaggle competitions often run with the internet off; a Kaggle dataset holding wheels installs with
`pip install --no-index --find-links <folder> kitpkg`. torch/torchvision are never shipped: the image has them, and a
reinstall costs gigabytes. The wheels are chosen for Kaggle's interpreter, not the one running the command (a wheelhouse
built on 3.11 does not install into Kaggle's 3.12: "No matching distribution found for simplejpeg"). The same
dataset-metadata.json helper packages shard folders and timm weights.
"""
from __future__ import annotations

import difflib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from ..errors import KitError
from ..fsutil import atomic_write_text

# Never shipped: present on Kaggle and Colab, huge, and tied to the CUDA driver.
NEVER = frozenset({"torch", "torchvision", "torchaudio", "triton"})
# Known to be on Kaggle's Python image (checked against Kaggle/docker-python requirements). Shipping them anyway is
# harmless (pip only installs a wheel when the installed version misses the range) but makes the dataset bigger.
KAGGLE_PREINSTALLED = frozenset("""
numpy pandas scipy scikit-learn joblib threadpoolctl matplotlib contourpy cycler fonttools kiwisolver pyparsing pillow
python-dateutil pytz tzdata six pyyaml tqdm requests certifi charset-normalizer idna urllib3 packaging typing-extensions
filelock fsspec protobuf opencv-python opencv-python-headless opencv-contrib-python beautifulsoup4 soupsieve
huggingface-hub hf-xet safetensors pydantic pydantic-core annotated-types typing-inspection click anyio sniffio h11
httpx httpcore jinja2 markupsafe sympy mpmath networkx setuptools pip wheel attrs aiohttp aiosignal frozenlist
multidict yarl propcache aiohappyeyeballs psutil regex
""".split())
DEFAULT_LICENSE = "CC0-1.0"
INSTALL_COMMAND = 'pip install -q --no-index --find-links "$(dirname "$0")" kitpkg "$@"'  # install.sh's one line
KAGGLE_PYTHON = "3.12"  # Kaggle's GPU image (Kaggle/docker-python, 2026-08)
# Kaggle's image is Ubuntu 22.04 (glibc 2.35); targeting 2.28 keeps a margin and still takes manylinux_2_28 wheels.
KAGGLE_GLIBC_MINOR = 28


def manylinux_platforms(glibc_minor: int = KAGGLE_GLIBC_MINOR, arch: str = "x86_64") -> List[str]:
    """pip --platform values a glibc 2.`glibc_minor` system installs: manylinux_2_N for N down to 5, with the legacy
    aliases (pip does not expand manylinux2014 to manylinux_2_17 or newer tags itself)."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags: List[str] = []
    for minor in range(glibc_minor, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{arch}")
    return tags


KAGGLE_PLATFORMS = tuple(manylinux_platforms())


def target_environment(python_version: str, platforms: Sequence[str]) -> Dict[str, str]:
    """PEP 508 marker values of the target interpreter (so `; python_version < "3.12"` is judged for Kaggle, not here)."""
    from packaging.markers import default_environment

    env = dict(default_environment())
    linux = any("linux" in p for p in platforms)
    arch = next((m for m in ("x86_64", "aarch64") if any(p.endswith(m) for p in platforms)), env["platform_machine"])
    env.update(python_version=python_version, python_full_version=f"{python_version}.0", implementation_name="cpython",
               platform_python_implementation="CPython", platform_machine=arch,
               **({"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"} if linux else {}))
    return env


def normalize(name: str) -> str:
    """PEP 503 project name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires(name: str) -> Optional[List[str]]:
    try:
        return metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        return None


def _version(name: str) -> str:
    return metadata.version(name)


def dependency_closure(root: str = "kitpkg", exclude: Iterable[str] = (), *,
                       requires: Callable[[str], Optional[List[str]]] = _requires,
                       version: Callable[[str], str] = _version,
                       markers: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """{project: installed version} for `root` and its runtime dependencies, not entering excluded projects;
    environment markers are judged with `markers` (the target interpreter's values; default: this one's)."""
    from packaging.requirements import Requirement  # pip's own dependency; present wherever pip is

    skip = {normalize(n) for n in exclude} | NEVER
    found: Dict[str, str] = {}
    todo = [normalize(root)]
    while todo:
        name = todo.pop()
        if name in found or name in skip or name.startswith("nvidia-"):
            continue
        reqs = requires(name)
        if reqs is None:
            raise KitError(f"{name}: not installed here, so its wheel version is unknown; install it, or pass "
                           f"--exclude {name}")
        found[name] = version(name)
        for text in reqs:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**(markers or {}), "extra": ""}):
                continue  # optional extras and other platforms' dependencies
            todo.append(normalize(req.name))
    return dict(sorted(found.items()))


def write_dataset_metadata(folder: os.PathLike, slug: str, *, user: Optional[str] = None,
                           title: Optional[str] = None, license_name: str = DEFAULT_LICENSE) -> Path:
    """Write the dataset-metadata.json that `kaggle datasets create -p FOLDER` reads; return its path."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,48}[a-z0-9]", slug):
        raise KitError(f"--slug {slug!r}: Kaggle wants 3-50 lower-case letters, digits or dashes, e.g. kitpkg-wheels")
    folder = _existing_folder(folder, "the folder to upload, e.g. the size folder `kitpkg convert` wrote")
    user = user or os.environ.get("KAGGLE_USERNAME") or _kaggle_json_user()
    if not user:
        print("kitpkg: no Kaggle user name (pass --user or set KAGGLE_USERNAME); edit INSERT_USERNAME in "
              "dataset-metadata.json before `kaggle datasets create`", file=sys.stderr)
        user = "INSERT_USERNAME"
    title = title or slug
    if not 6 <= len(title) <= 50:
        title = (title + " dataset")[:50] if len(title) < 6 else title[:50]
    path = folder / "dataset-metadata.json"
    atomic_write_text(path, json.dumps({"title": title, "id": f"{user}/{slug}",
                                        "licenses": [{"name": license_name}]}, indent=2) + "\n")
    return path


def _existing_folder(folder: os.PathLike, what: str) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise KitError(f"{folder}: a file, not a folder; give {what}")
    if not folder.is_dir():
        raise KitError(f"{folder}: no such folder; give {what}")
    return folder


def _kaggle_json_user() -> Optional[str]:
    path = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    try:
        return json.loads(path.read_text()).get("username")
    except (OSError, ValueError):
        return None


def install_line(folder: str = "/kaggle/input", package: str = "kitpkg") -> str:
    """The one notebook line that runs the install.sh of the wheelhouse found anywhere under `folder` (offline)."""
    # Attached datasets mount at varying depths, so find the wheel rather than hard-code the slug.
    return f"sh \"$(dirname \"$(find {folder} -name '{package}-*.whl' | head -n 1)\")/install.sh\""


def _source_tree() -> Optional[Path]:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.py").is_file() else None


def _pip(args: Sequence[str], runner: Callable[..., subprocess.CompletedProcess]) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = runner(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-5:])
        raise KitError(f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}): {tail}")


def build_kit_wheel(out: Path, runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Path:
    """Build (from this source tree) or download (from PyPI) the kit's own wheel into `out`; return it."""
    from .._version import __version__

    source = _source_tree()
    if source is None:
        _pip(["download", "--no-deps", "--only-binary=:all:", "-d", str(out), f"kitpkg=={__version__}"], runner)
    else:
        with tempfile.TemporaryDirectory(prefix="kitpkg-build-") as tmp:
            # Build from a copy: an in-tree build would leave build/ and egg-info in the user's checkout.
            copy = Path(tmp) / "src"
            shutil.copytree(source / "kitpkg", copy / "kitpkg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            for name in ("setup.py", "README.md", "pyproject.toml", "MANIFEST.in"):
                if (source / name).is_file():
                    shutil.copy2(source / name, copy / name)
            _pip(["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(copy)], runner)
    wheels = sorted(out.glob(f"kitpkg-{__version__}-*.whl"))
    if not wheels:
        raise KitError(f"{out}: no kitpkg-{__version__} wheel appeared; see pip's output above")
    return wheels[-1]


def download_wheels(pins: Dict[str, str], out: Path, *, python_version: str = KAGGLE_PYTHON,
                    platforms: Sequence[str] = KAGGLE_PLATFORMS, pip_args: Sequence[str] = (),
                    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """Download the binary wheel of each pinned project for the target Python and platforms into `out`."""
    if not pins:
        return
    target = ["--python-version", python_version, "--implementation", "cp"]
    for tag in platforms:
        target += ["--platform", tag]
    # --only-binary: pip's rule with a foreign target (and a source build could not run there anyway).
    # --no-deps: the closure is computed by the caller; letting pip resolve would pull torch (timm and lightning need it)
    _pip(["download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(out), *target, *pip_args,
          *(f"{n}=={v}" for n, v in pins.items())], runner)


def build_wheelhouse(out: os.PathLike, *, slug: str = "kitpkg-wheels", user: Optional[str] = None,
                     title: Optional[str] = None, deps: bool = True, exclude: Iterable[str] = (),
                     keep_preinstalled: bool = False, python_version: str = KAGGLE_PYTHON,
                     platforms: Sequence[str] = KAGGLE_PLATFORMS, pip_args: Sequence[str] = (),
                     runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Path:
    """Fill `out` with the kit's wheel, its missing dependencies' wheels for the target Python/platform (Kaggle's by
    default), install.sh and dataset-metadata.json."""
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise KitError(f"--python-version {python_version!r}: give major.minor, e.g. {KAGGLE_PYTHON}")
    platforms = list(platforms) or list(KAGGLE_PLATFORMS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_kit_wheel(out, runner)
    wanted: Dict[str, str] = {}
    if deps:
        skip = set(exclude) | (set() if keep_preinstalled else set(KAGGLE_PREINSTALLED))
        closure = dependency_closure("kitpkg", skip, markers=target_environment(python_version, platforms))
        wanted = {n: v for n, v in closure.items() if n != "kitpkg"}
    download_wheels(wanted, out, python_version=python_version, platforms=platforms, pip_args=pip_args,
                    runner=runner)
    script = out / "install.sh"
    atomic_write_text(script, "#!/bin/sh\n# Offline install of kitpkg from the wheels beside this script (torch "
                              f"untouched); wheels for Python {python_version}.\n{INSTALL_COMMAND}\n")
    script.chmod(0o755)
    write_dataset_metadata(out, slug, user=user, title=title or "kitpkg offline wheels")
    print(f"kitpkg wheelhouse: {wheel.name} + {len(wanted)} dependency wheels for Python {python_version} "
          f"({platforms[0]}) in {out}\n"
          f"  upload:  kaggle datasets create -p {out}\n"
          f"  install: !{install_line()}\n"
          f"           (install.sh runs: pip install --no-index --find-links {out} kitpkg)", flush=True)
    return out


def export_timm_weights(model_name: str, out: os.PathLike, *, pretrained: bool = True) -> Path:
    """Save a timm model's (pretrained) weights as OUT/<model>.safetensors for offline use; return the file."""
    import timm  # heavy: only this command needs it
    from safetensors.torch import save_file
    from timm.models import is_model, is_model_pretrained

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KitError(f"{out}: a file, not a folder; give a folder for the weights")
    if not is_model(model_name):  # before any download or folder appears
        close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=3)
        raise KitError(f"{model_name}: not a timm model name" + (f" (close: {', '.join(close)})" if close else "")
                       + "; see timm.list_models()")
    if pretrained and not is_model_pretrained(model_name):
        raise KitError(f"{model_name}: timm has no pretrained weights for it; see timm.list_models(pretrained=True)")
    model = timm.create_model(model_name, pretrained=pretrained)
    path = out / f"{model_name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return path


def create_offline_model(model_name: str, weights: os.PathLike, **kwargs):
    """A timm model initialised from a file written by `export_timm_weights` (no hub access)."""
    import timm

    return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)
