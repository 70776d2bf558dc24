"""Continue a Kaggle run from an attached copy of its run directory (a Save Version output, or any dataset holding one).

A crashed Kaggle session keeps `/kaggle/working` only with the Persistence setting (best effort), and a Save Version
run keeps it only as that version's output. Attached to a new session, that output is read-only under /kaggle/input:
the run directory with this experiment's config is copied into the working run directory (under a temporary name,
every file checked by size and sha256, then renamed), and training continues there: finished folds are kept, the
running fold resumes from its last checkpoint. Nothing is written under /kaggle/input.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from ..errors import KitError
from ..fsutil import atomic_write, sha256_file
from ..rundir import RunDir

_TMP_MARK = ".restore-"  # prefix of the temporary copy beside the run directory: never a finished copy


def restore_run(run_dir: os.PathLike, config, attached_runs: Sequence[Path],
                expect: Optional[Callable[[Path], object]] = None) -> Optional[Path]:
    """Copy the attached run directory that has `config` into `run_dir` when `run_dir` holds no run yet; return the
    source copied (None when nothing was). An attached run of the same name with another config is refused.

    `expect(folder)`: the config that run would have if it is this one (the notebook applies the LR finder's
    suggestion cached in it); default `config`."""
    run_dir = Path(run_dir)
    if RunDir(run_dir).state.exists() or not attached_runs:
        return None  # the working copy (kept by Persistence, or this session's) always wins
    from ..config import config_hash, diff_keys, result_dict
    from ..train.runstate import RunState

    same, refused = [], []
    for folder in attached_runs:
        try:
            state = RunState.read(folder)  # reads only: the input is read-only
        except KitError:
            continue
        mine = expect(folder) if expect is not None else config
        if state.config_hash == config_hash(mine):
            same.append(state)
        elif folder.name == run_dir.name and state.has_work():
            refused.append((folder, diff_keys(state.config, result_dict(mine))))
    if not same:
        if refused:
            folder, changed = refused[0]
            raise KitError(f"{folder} (attached) was run with another config ({'; '.join(changed)}); restore those "
                           f"values to continue it, or use another experiment name (output.run_dir) to start afresh")
        return None
    # several versions attached: the one furthest on, then the newest
    best = max(same, key=lambda s: (len(s.done_folds()), s.path.stat().st_mtime))
    before = _before_run_files(run_dir)
    if run_dir.is_dir() and set(run_dir.iterdir()) - set(before):
        print(f"kitpkg: {run_dir} already holds files but no run state; not copying the attached run {best.run_dir} "
              f"over them (move them away and re-run to continue it)", flush=True)
        return None
    copy_tree_verified(best.run_dir, run_dir, keep=before)
    print(f"kitpkg: continuing the attached run {best.run_dir} (finished folds: {best.done_folds() or 'none'}) "
          f"in {run_dir}", flush=True)
    return best.run_dir


def restore_on_kaggle(config, run_dir: Optional[os.PathLike] = None,
                      environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """On Kaggle, `restore_run` from the run directories found under /kaggle/input (for `kitpkg cv`); else nothing."""
    from ..env import detect_platform, kaggle_root
    from .attached import find_attached

    environ = os.environ if environ is None else environ
    if detect_platform(environ) != "kaggle":
        return None
    runs = find_attached(kaggle_root(environ) / "input").runs
    return restore_run(Path(run_dir or config.output.run_dir), config, runs)


def _before_run_files(run_dir: Path) -> List[Path]:
    """Files the kit writes into a run directory before its run starts (`kitpkg plan`'s plan.json): they do not make it
    a run, and they go along into a restored copy."""
    plan = RunDir(run_dir).plan
    return [plan] if plan.is_file() else []


def copy_tree_verified(src: Path, dest: Path, keep: Sequence[Path] = ()) -> None:
    """Copy folder `src` to the new folder `dest`: under a temporary name beside it, each file checked by size and
    sha256, then renamed, so `dest` appears complete or not at all. Modes are not copied (the source is read-only).
    `keep`: files directly in `dest` (which holds nothing else) moved into the copy, replacing the source's."""
    files = _files(src)
    need = sum(size for _, size in files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}{_TMP_MARK}*"):  # a copy killed part way
        shutil.rmtree(stale, ignore_errors=True)
    free = shutil.disk_usage(dest.parent).free
    if need > free:
        raise KitError(f"{dest.parent}: {need / 2**30:.1f} GiB needed to copy the attached run {src}, "
                       f"{free / 2**30:.1f} GiB free; free some space (old runs, checkpoints) and re-run")
    tmp = dest.parent / f".{dest.name}{_TMP_MARK}{os.getpid()}"
    try:
        for rel, size in files:
            _copy_file(src / rel, tmp / rel, size)
        for path in keep:
            os.replace(path, tmp / path.name)
        if dest.is_dir():
            dest.rmdir()  # empty now (checked by the caller): a folder made by an earlier step
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _files(src: Path) -> List[Tuple[Path, int]]:
    found = []
    for folder, dirs, names in os.walk(src, followlinks=True):
        dirs.sort()
        found += [((Path(folder) / n).relative_to(src), os.path.getsize(Path(folder) / n)) for n in sorted(names)]
    return found


def _copy_file(src: Path, dest: Path, size: int) -> None:
    digest = hashlib.sha256()
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        for chunk in iter(lambda: fin.read(1 << 22), b""):
            digest.update(chunk)
            fout.write(chunk)
    copied = os.path.getsize(dest)
    if copied != size or sha256_file(dest) != digest.hexdigest():
        raise KitError(f"{dest}: the copy of {src} differs from it ({copied} of {size} bytes); disk full or a read "
                       f"error: re-run to copy again")
    stat = os.stat(src)
    os.utime(dest, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # checkpoints keep their age
