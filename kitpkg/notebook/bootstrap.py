"""The notebook's first call: `setup()` detects the platform, mounts Drive on Colab, creates the project's folders,
scans attached datasets and prints a one-screen summary (the `Environment` every later step is given)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Tuple

from .. import env
from .attached import Attached, find_attached

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
    budget: Tuple[Tuple[str, str], ...] = ()  # summary rows: the session's default time limit, the output's size

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
        if not self.internet and env.importable("wandb"):  # e.g. Kaggle with the internet off (train.logger: wandb)
            rows.append(("w&b", "offline (no internet); upload later: wandb sync "
                                f"{self.run_dir}/<run>/logs/wandb/offline-run-*"))
        if self.cache_dir is not None:
            rows.append(("shard cache", str(self.cache_dir)))
        rows += list(self.budget)
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


def budget_rows(platform: str, run_dir: Path, output_dir: Path, environ: Mapping[str, str],
                now: Optional[float] = None) -> Tuple[Tuple[str, str], ...]:
    """Summary rows: when runs pause by default (train.time_limit, kitpkg/train/budget.py) and how much the run
    directory holds, against the platform's output limit (Kaggle: /kaggle/working, `output_dir`)."""
    import time

    now = time.time() if now is None else now
    length = env.session_length_s(platform, environ)
    if length is None:
        session = ("no known end: set train.time_limit (e.g. 11h30m) to pause before the runtime ends"
                   if platform == "colab" else "no limit (train.time_limit sets one)")
    else:
        start = env.session_start(platform, now, environ)
        clock = lambda t: time.strftime("%H:%M UTC", time.gmtime(t))  # noqa: E731
        began = f"from {clock(start)}" if start is not None else "from each run's start (the session's is unknown)"
        pause = f" by {clock(start + length - env.KAGGLE_MARGIN_S)}" if start is not None else ""
        session = (f"{length / 3600:g} h {began}: runs pause{pause}, {env.KAGGLE_MARGIN_S / 60:g} min before the end "
                   f"(train.time_limit sets another)")
    size = f"{env.folder_bytes(run_dir) / 1e9:.1f} GB"
    limit = env.output_limit_bytes(environ, platform)
    if limit is not None:
        size += f"; {output_dir} holds {env.folder_bytes(output_dir) / 1e9:.1f} GB of its {limit / 1e9:g} GB limit"
    return (("session", session), ("run dir size", size))


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
    platform = platform or env.detect_platform(environ)
    paths = env.layout(platform, project, environ)
    if paths.drive_mount is not None:
        from .drive import drive_errors, mount_drive  # Colab only

        mount_drive(paths.drive_mount, timeout_s=mount_timeout_s)
        with drive_errors(paths.run_dir):
            _make_dirs(paths.run_dir, paths.data_dir)
    else:
        _make_dirs(paths.run_dir, paths.data_dir)
    # the cache reaches the trainer as the config key data.cache_dir (the notebooks' experiment() sets it)
    _make_dirs(*(p for p in (paths.scratch_dir, paths.cache_dir) if p is not None))
    run_type = (environ.get("KAGGLE_KERNEL_RUN_TYPE") or None) if platform == "kaggle" else None
    environment = Environment(platform=platform, project=project, run_dir=paths.run_dir, data_dir=paths.data_dir,
                              scratch_dir=paths.scratch_dir, cache_dir=paths.cache_dir, submit_dir=paths.submit_dir,
                              drive_mount=paths.drive_mount,
                              attached=find_attached(paths.kaggle_input), gpu=env.gpu_summary(), ram_gib=env.ram_gib(),
                              disk_free_gib=env.free_disk_gib(paths.scratch_dir), internet=env.has_internet(environ),
                              kaggle_run_type=run_type,
                              budget=budget_rows(platform, paths.run_dir, paths.submit_dir, environ))
    if not quiet:
        print(environment.summary(), flush=True)
    return environment


def _make_dirs(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
