"""Where the kit runs: platform detection (Kaggle first, then Colab, then local), directories, and a one-screen summary.

Detection and path layout are pure functions of (environment variables, importable modules, root folders) so tests fake
a platform with a dict; `setup()` is the only part with side effects (mount Drive, create folders, print).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple

from .errors import KitError
from .rundir import STATE_NAME

PLATFORMS = ("kaggle", "colab", "local")
DEFAULT_KAGGLE_ROOT = "/kaggle"
DEFAULT_DRIVE_ROOT = "/content/drive"  # Colab's mountpoint; MyDrive appears inside it
DEFAULT_COLAB_LOCAL = "/content"  # Colab's local disk: fast, wiped when the runtime dies
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_WALK_DEPTH = 6  # attached Kaggle datasets mount at /kaggle/input/<slug>/ or a few levels deeper


def _importable(name: str) -> bool:
    """True if `name` can be imported (a module faked in sys.modules counts)."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect_platform(environ: Mapping[str, str], importable: Callable[[str], bool] = _importable) -> str:
    """'kaggle', 'colab' or 'local': the KITPKG_PLATFORM override, else Kaggle's variables, else Colab's, else local."""
    override = environ.get("KITPKG_PLATFORM", "").strip().lower()
    if override:
        if override not in PLATFORMS:
            raise KitError(f"KITPKG_PLATFORM={override!r}: use one of {', '.join(PLATFORMS)} (or unset it)")
        return override
    # Kaggle's image is built on Colab's and sets COLAB_* too, so Kaggle must be checked first.
    if environ.get("KAGGLE_KERNEL_RUN_TYPE") or environ.get("KAGGLE_URL_BASE"):
        return "kaggle"
    if environ.get("COLAB_RELEASE_TAG") or environ.get("COLAB_BACKEND_VERSION") or importable("google.colab"):
        return "colab"
    return "local"


@dataclass(frozen=True)
class Layout:
    """The folders of one project on one platform (computed, not created)."""

    run_dir: Path  # persistent: checkpoints, OOF, reports (Drive on Colab)
    data_dir: Path  # persistent: shards converted here
    scratch_dir: Path  # fast local disk: checkpoints are written here before they are copied to run_dir
    cache_dir: Optional[Path]  # fast local disk for copies of shards kept on slow storage (None: data is local)
    submit_dir: Path  # where submission.csv is put (Kaggle scores /kaggle/working/submission.csv)
    drive_mount: Optional[Path] = None  # Colab only: where Drive is mounted
    kaggle_input: Optional[Path] = None  # Kaggle only: the read-only folder attached datasets appear under


def kaggle_root(environ: Mapping[str, str]) -> Path:
    """/kaggle (KITPKG_KAGGLE_ROOT moves it: tests)."""
    return Path(environ.get("KITPKG_KAGGLE_ROOT", DEFAULT_KAGGLE_ROOT))


def layout(platform: str, project: str, environ: Mapping[str, str], cwd: Optional[Path] = None) -> Layout:
    """The project's folders on `platform`; KITPKG_KAGGLE_ROOT/_DRIVE_ROOT/_LOCAL_ROOT move the roots (tests)."""
    if not project or "/" in project or project.startswith("."):
        raise KitError(f"project={project!r}: use a plain folder name such as 'melanoma'")
    if platform == "kaggle":
        root = kaggle_root(environ)
        base = root / "working" / project  # /kaggle/input is read-only; /kaggle/working is kept with the notebook
        return Layout(run_dir=base / "runs", data_dir=base / "data", scratch_dir=root / "temp" / project,
                      cache_dir=None, submit_dir=root / "working", kaggle_input=root / "input")
    if platform == "colab":
        mount = Path(environ.get("KITPKG_DRIVE_ROOT", DEFAULT_DRIVE_ROOT))
        local = Path(environ.get("KITPKG_LOCAL_ROOT", DEFAULT_COLAB_LOCAL)) / project
        base = mount / "MyDrive" / project  # survives the runtime; slow with many files, so shards are cached locally
        return Layout(run_dir=base / "runs", data_dir=base / "data", scratch_dir=local / "scratch",
                      cache_dir=local / "cache", submit_dir=base, drive_mount=mount)
    if platform == "local":
        base = Path(environ.get("KITPKG_LOCAL_ROOT", str(cwd or Path.cwd()))) / project
        return Layout(run_dir=base / "runs", data_dir=base / "data", scratch_dir=base / "scratch", cache_dir=None,
                      submit_dir=base)
    raise KitError(f"platform={platform!r}: use one of {', '.join(PLATFORMS)}")


@dataclass(frozen=True)
class Attached:
    """What attached (read-only) datasets offer: shard sets, offline wheelhouses, model weights, run directories."""

    manifests: Tuple[Path, ...] = ()
    wheelhouses: Tuple[Path, ...] = ()
    weights: Tuple[Path, ...] = ()
    runs: Tuple[Path, ...] = ()  # folders holding a state.json: kitpkg run directories (e.g. a version's output)


def find_attached(root: Optional[Path], max_depth: int = _WALK_DEPTH) -> Attached:
    """Walk `root` (e.g. /kaggle/input) for manifest.json folders, folders of kitpkg wheels, weight files and run
    directories (a run directory's own checkpoints are not listed as weights)."""
    if root is None or not root.is_dir():
        return Attached()
    manifests: List[Path] = []
    wheelhouses: List[Path] = []
    weights: List[Path] = []
    runs: List[Path] = []
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        if len(here.parts) - base_depth >= max_depth:
            dirs[:] = []
        dirs.sort()
        if STATE_NAME in files:  # a run directory of `kitpkg cv`
            runs.append(here)
            dirs[:] = []  # its fold folders are part of it, not datasets of their own
            continue
        if "manifest.json" in files:
            manifests.append(here)
        if any(f.startswith("kitpkg-") and f.endswith(".whl") for f in files):
            wheelhouses.append(here)
        weights.extend(here / f for f in sorted(files) if f.endswith(WEIGHT_SUFFIXES))
    return Attached(tuple(sorted(manifests)), tuple(sorted(wheelhouses)), tuple(sorted(weights)), tuple(sorted(runs)))


def gpu_summary(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> str:
    """'2 x Tesla T4 (15360 MiB)' from nvidia-smi, or 'none'; never touches CUDA (ddp_notebook needs it untouched)."""
    if shutil.which("nvidia-smi") is None and run is subprocess.run:
        return "none"
    try:
        out = run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "none"
    rows = [r.strip() for r in (out.stdout or "").splitlines() if r.strip()] if out.returncode == 0 else []
    if not rows:
        return "none"
    names = {}
    for row in rows:
        name, _, memory = row.partition(",")
        key = f"{name.strip()} ({memory.strip()})" if memory.strip() else name.strip()
        names[key] = names.get(key, 0) + 1
    return ", ".join(f"{n} x {k}" for k, n in names.items())


def ram_gib() -> Tuple[float, float]:
    """(available, total) RAM in GiB from /proc/meminfo (0, 0 where unknown)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        kib = lambda key: float(info[key].split()[0])  # noqa: E731
        return kib("MemAvailable") / 2**20, kib("MemTotal") / 2**20
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0


def free_disk_gib(path: Path) -> float:
    """Free space in GiB on the file system holding `path` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free / 2**30
    except OSError:
        return 0.0


def has_internet(environ: Mapping[str, str] = os.environ, timeout: float = 1.5) -> bool:
    """True if a public DNS server answers a TCP connect; KITPKG_INTERNET=0/1 answers without trying (tests)."""
    forced = environ.get("KITPKG_INTERNET", "").strip()
    if forced:
        return forced.lower() not in ("0", "no", "false", "off")
    for host in ("8.8.8.8", "1.1.1.1"):  # IPs, not names: with the internet off DNS itself may hang
        try:
            socket.create_connection((host, 53), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


@dataclass(frozen=True)
class Environment:
    """The result of `setup()`: platform, folders, attached datasets and the machine's resources."""

    platform: str
    project: str
    run_dir: Path
    data_dir: Path
    scratch_dir: Path
    cache_dir: Optional[Path]
    submit_dir: Path
    drive_mount: Optional[Path] = None
    attached: Attached = field(default_factory=Attached)
    gpu: str = "none"
    ram_gib: Tuple[float, float] = (0.0, 0.0)
    disk_free_gib: float = 0.0
    internet: bool = False
    kaggle_run_type: Optional[str] = None  # KAGGLE_KERNEL_RUN_TYPE: "Interactive" (a session) or "Batch" (Save Version)

    def find_manifest(self, image_size: Optional[int] = None) -> Optional[Path]:
        """The folder of an attached or already converted shard set (of `image_size` if given), else None."""
        candidates = list(self.attached.manifests)
        if self.data_dir.is_dir():
            candidates += sorted(p.parent for p in self.data_dir.glob("**/manifest.json"))
        for folder in candidates:
            if image_size is None or folder.name == str(image_size) or _manifest_size(folder) == image_size:
                return folder
        return None

    def summary(self) -> str:
        """A few aligned lines for the notebook: platform, GPU, RAM, disk, internet and folders."""
        avail, total = self.ram_gib
        rows = [
            ("platform", self.platform),
            ("gpu", self.gpu),
            ("ram", f"{avail:.1f} GiB free of {total:.1f} GiB"),
            ("disk", f"{self.disk_free_gib:.1f} GiB free (local scratch)"),
            ("internet", "yes" if self.internet else "no"),
            ("data dir", str(self.data_dir)),
            ("run dir", str(self.run_dir)),
        ]
        if self.cache_dir is not None:
            rows.append(("shard cache", str(self.cache_dir)))
        if self.platform == "kaggle":
            rows += [("persistence", line) for line in kaggle_persistence(self.kaggle_run_type)]
        rows += [("attached runs", str(p)) for p in self.attached.runs]
        rows += [("attached shards", str(p)) for p in self.attached.manifests]
        rows += [("attached wheels", str(p)) for p in self.attached.wheelhouses]
        rows += [("attached weights", str(p)) for p in self.attached.weights[:5]]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"kitpkg {k.ljust(width)} : {v}" for k, v in rows)


def kaggle_persistence(run_type: Optional[str]) -> Tuple[str, ...]:
    """How /kaggle/working (the run directory) survives this kind of Kaggle run, as summary lines."""
    if (run_type or "").lower() == "batch":
        return ("a Save Version run: /kaggle/working becomes this version's output;",
                "to continue, attach that output to a new session (Add Input -> Your Work) and run the same cells")
    # Kaggle shows the Persistence setting only in the notebook's menu: nothing in the session says whether it is on
    return ("/kaggle/working survives a restart only with Settings -> Persistence: Files (best effort, not",
            "checkable from here); safer: Save Version, then attach its output as input: the run continues from it")


def _manifest_size(folder: Path) -> Optional[int]:
    import json  # only for attached sets whose folder name is not the size

    try:
        return json.loads((folder / "manifest.json").read_text()).get("image_size")
    except (OSError, ValueError):
        return None


def setup(project: str = "kitpkg", *, platform: Optional[str] = None, mount_timeout_s: float = 120.0,
          environ: Optional[Mapping[str, str]] = None, quiet: bool = False) -> Environment:
    """Detect the platform, mount Drive on Colab if needed, create the project's folders, print a summary.

    Safe to run again (a notebook cell re-run after a crash): a mounted Drive is not remounted, existing folders are
    kept, and only the summary is printed again.
    """
    environ = os.environ if environ is None else environ
    platform = platform or detect_platform(environ)
    paths = layout(platform, project, environ)
    if paths.drive_mount is not None:
        from .notebook.drive import drive_errors, mount_drive  # Colab only

        mount_drive(paths.drive_mount, timeout_s=mount_timeout_s)
        with drive_errors(paths.run_dir):
            _make_dirs(paths.run_dir, paths.data_dir)
    else:
        _make_dirs(paths.run_dir, paths.data_dir)
    # the cache reaches the trainer as the config key data.cache_dir (the notebooks' experiment() sets it)
    _make_dirs(*(p for p in (paths.scratch_dir, paths.cache_dir) if p is not None))
    env = Environment(platform=platform, project=project, run_dir=paths.run_dir, data_dir=paths.data_dir,
                      scratch_dir=paths.scratch_dir, cache_dir=paths.cache_dir, submit_dir=paths.submit_dir,
                      drive_mount=paths.drive_mount,
                      attached=find_attached(paths.kaggle_input), gpu=gpu_summary(), ram_gib=ram_gib(),
                      disk_free_gib=free_disk_gib(paths.scratch_dir), internet=has_internet(environ),
                      kaggle_run_type=(environ.get("KAGGLE_KERNEL_RUN_TYPE") or None) if platform == "kaggle" else None)
    if not quiet:
        print(env.summary(), flush=True)
    return env


def _make_dirs(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
