"""Where the kit runs: platform detection (Kaggle first, then Colab, then local), the project's folders on it, the
machine's resources and the kit's environment switches.

Detection and path layout are pure functions of (environment variables, importable modules, root folders) so tests fake
a platform with a dict; the notebook's `setup()` (kitpkg/notebook/bootstrap.py) acts on them.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

from .errors import KitError

PLATFORMS = ("kaggle", "colab", "local")
DEFAULT_KAGGLE_ROOT = "/kaggle"
DEFAULT_DRIVE_ROOT = "/content/drive"  # Colab's mountpoint; MyDrive appears inside it
DEFAULT_COLAB_LOCAL = "/content"  # Colab's local disk: fast, wiped when the runtime dies


def importable(name: str) -> bool:
    """True if `name` can be imported (a module faked in sys.modules counts)."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect_platform(environ: Mapping[str, str], importable: Callable[[str], bool] = importable) -> str:
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


def env_flag(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """True when the environment variable `name` is set to a truthy value (not '', 0, false, no)."""
    return environ.get(name, "").lower() not in ("", "0", "false", "no")


# Kaggle's limits (FIELD-NOTES "Free GPUs as they are"): a GPU (or CPU) session ends about 12 h after it started, a
# TPU session after 9 h; /kaggle/working, which becomes a version's output, holds about 20 GB.
KAGGLE_SESSION_S = {"gpu": 12 * 3600.0, "tpu": 9 * 3600.0}
KAGGLE_OUTPUT_BYTES = 20 * 10**9
# What is left after the pause: the pause's own checkpoint (a B4 full state, a few hundred MB: under a minute on
# local disk), the partial report, and slack for a validation pass not yet timed (the first epoch's) -- 15 min of 12 h
KAGGLE_MARGIN_S = 15 * 60.0
TPU_VARIABLES = ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_TPU_ADDR")  # set on TPU runtimes (not on GPU ones)


def session_length_s(platform: str, environ: Mapping[str, str]) -> Optional[float]:
    """How long a session of `platform` lasts from its start (Kaggle: 12 h, 9 h on a TPU); None: no fixed end known."""
    if platform != "kaggle":
        return None  # Colab's runtimes end after idle time or usage limits that are not published as one figure
    return KAGGLE_SESSION_S["tpu" if any(environ.get(v) for v in TPU_VARIABLES) else "gpu"]


def process_start(pid: str = "1", proc: Path = Path("/proc")) -> Optional[float]:
    """Wall-clock start (epoch seconds) of process `pid` from /proc/<pid>/stat and /proc/stat's boot time; None
    where unreadable (not Linux)."""
    try:
        stat = (proc / pid / "stat").read_text()
        boot = next(float(line.split()[1]) for line in (proc / "stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = float(stat.rpartition(")")[2].split()[19])  # field 22, starttime; the name before may hold spaces
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def session_start(platform: str, now: float, environ: Mapping[str, str], proc: Path = Path("/proc")
                  ) -> Optional[float]:
    """When this platform session began (epoch seconds): on Kaggle and Colab the start of the container's first
    process (PID 1), else of this process where PID 1's start is unreadable or implausible (in the future, or older
    than a whole session: not the session's container); locally, the start of the run whose worker this is
    (KITPKG_RUN_START, set by `--parallel-folds`), else None (a limit counts from the run's start there)."""
    if platform == "local":
        return float(environ["KITPKG_RUN_START"]) if environ.get("KITPKG_RUN_START") else None
    length = session_length_s(platform, environ) or 24 * 3600.0  # Colab: its longest (paid) runtimes
    for pid in ("1", str(os.getpid())):
        start = process_start(pid, proc)
        if start is not None and now - length <= start <= now:
            return start
    return None


def folder_bytes(path: Path) -> int:
    """Bytes held by the files under `path` (0 when it does not exist); links are not followed."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while walking
    return total


def output_limit_bytes(environ: Mapping[str, str] = os.environ, platform: Optional[str] = None) -> Optional[int]:
    """How much the run's output folder may hold on `platform` (default: this one): Kaggle's /kaggle/working about
    20 GB; None elsewhere."""
    return KAGGLE_OUTPUT_BYTES if (platform or detect_platform(environ)) == "kaggle" else None
