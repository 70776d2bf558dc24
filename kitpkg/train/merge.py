"""`kitpkg merge DIR … --config C [--into DIR]`: run directories of one experiment, trained on different machines
(`kitpkg cv --folds 0,1` here, `--folds 2,3,4` there), put together and finished without retraining.

Every directory must hold a run of the given config on the same shard sets (refused otherwise, naming the keys that
differ). Each finished fold of a source is first copied whole into a staging folder of its own inside the target
(`.merge-<host>-<pid>-<token>/`) and checked there: the weights it predicts with load the safe way (foldcheck's rule),
its OOF and test predictions hold every sample of the fold once, with finite values. A source fold that fails, or a
fold a live `kitpkg cv` process trains in the target (its lease, lease.py), is refused in one line before any fold is
recorded. Then each fold is put in place by renames -- its folder, its
prediction files, and its record (folds/fold{k}.json) last, so a fold shows as done only once its files are -- while
the merge holds the fold's claim (folds/.fold{k}.merging, made by an atomic mkdir): two merges into one target never
mix their files, and the second finds the fold done and compares. A fold already finished in the target is kept: when
another copy's predictions differ, that is reported (one line naming both directories), never overwritten. Then OOF,
CV score, submission and report are written from all folds, as `kitpkg cv` would.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import Config
from ..errors import KitError
from ..fsutil import atomic_copy
from ..predictions import probability_columns
from ..rundir import FoldRecord, RunDir
from . import predict as P
from .cv import finish, fold_selection, open_run
from .inputs import RunInputs, load_inputs
from .results import CVResult
from .foldcheck import predictions_problem, weights_problem
from .lease import check_free
from .runstate import RunState

SAME = 1e-6  # predictions closer than this are the same result (what a deterministic re-run reproduces)
CLAIM_WAIT_S = 60.0  # how long a merge waits for another one to put the same fold in place (renames: moments)


@dataclass
class Staged:
    """A source's fold k copied and checked in the target's staging folder, ready to be renamed into place."""

    source: RunState
    k: int
    folder: Path  # laid out as a run directory: fold k's folder and prediction files
    record: FoldRecord


def merge_runs(config: Config, dirs: Sequence[os.PathLike], into: Optional[os.PathLike] = None
               ) -> Tuple[CVResult, List[str]]:
    """Copy the finished folds of `dirs` into `into` (default: the first of them), then finish the run there.

    Returns the run's result and one line per fold finished in two directories with different results."""
    if not dirs:
        raise KitError("merge: name the run directories to merge")
    sources = [RunState.read(d) for d in dirs]  # each must be a run directory (KitError naming it otherwise)
    inputs = load_inputs(config)
    fingerprints = inputs.fingerprints()
    for source in sources:  # all checked before anything is written
        problem = source.mismatch(config, fingerprints)
        if problem:
            raise KitError(f"merge: {problem}")
    inputs, state = open_run(config, into if into is not None else sources[0].run_dir, inputs=inputs)
    _drop_stale_stages(state.run_dir)
    stage = state.paths.merge_stage(f"{_host()}-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        staged, conflicts = stage_folds(sources, state, inputs, stage)
        for fold in staged:
            line = install_fold(fold, state)
            if line:
                conflicts.append(line)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    all_folds, _ = fold_selection(config, inputs)
    return finish(config, inputs, state, all_folds), conflicts


def stage_folds(sources: Sequence[RunState], target: RunState, inputs: RunInputs, stage: Path
                ) -> Tuple[List[Staged], List[str]]:
    """Copy and check every source fold the target lacks (the first source having it gives it); KitError naming the
    source and fold when one is broken. Also the lines of folds that two copies finished with different results."""
    staged: Dict[int, Staged] = {}
    conflicts = []
    for source in sources:
        if source.run_dir.resolve() == target.run_dir.resolve():
            continue
        for k in source.done_folds():
            if target.is_done(k) or k in staged:
                kept = (target.run_dir, target.run_dir) if target.is_done(k) else (staged[k].folder,
                                                                                   staged[k].source.run_dir)
                line = compare_fold(source, k, *kept, target)
                if line:
                    conflicts.append(line)
                continue
            check_free(target, [k])  # a fold a `kitpkg cv` is training there now is not replaced under it
            staged[k] = stage_fold(source, k, stage / str(k), inputs)
    return [staged[k] for k in sorted(staged)], conflicts


def stage_fold(source: RunState, k: int, folder: Path, inputs: RunInputs) -> Staged:
    """Copy fold k's files (fold{k}/ but its per-rank parts, its OOF and test predictions) from `source` into
    `folder`, and check the copies: KitError in one line when they are not a whole fold."""
    record = source.fold(k)  # read before the files: a record is written after its files
    src = source.run_dir
    for path in source.paths.fold_files(k):
        atomic_copy(path, folder / path.relative_to(src))
    problem = fold_problem(folder, k, inputs)
    if problem:
        raise KitError(f"merge: {src}: fold {k} cannot be merged: {problem}; leave {src} out of the merge, or "
                       f"delete {source.fold_path(k)} and run `kitpkg cv` there to train fold {k} again")
    return Staged(source, k, folder, record)


def fold_problem(folder: Path, k: int, inputs: RunInputs) -> Optional[str]:
    """Why the fold k files in `folder` (a run directory or a staging folder) are not a whole finished fold."""
    files = RunDir(folder)
    problem = weights_problem(files.ckpt_dir(k))
    if problem:
        return f"its weights: {problem.replace(str(folder) + os.sep, '')}"
    problem = predictions_problem(files.fold_oof(k), P.fold_ids(inputs.manifest, "val", k),
                                  probability_columns(inputs.task), probabilities=inputs.task.probabilities)
    if problem is None and inputs.manifest.select("test"):
        problem = predictions_problem(files.fold_test(k), P.fold_ids(inputs.manifest, "test"),
                                      P.score_columns(inputs.num_classes), probabilities=False)  # logits or probs
    return problem


def install_fold(fold: Staged, target: RunState) -> Optional[str]:
    """Rename a staged fold into the target and record it, holding the fold's claim; when another merge finished the
    fold meanwhile, compare instead (a line when the results differ)."""
    k, run_dir = fold.k, target.run_dir
    with fold_claim(target, k):
        if target.is_done(k):
            return compare_fold(fold.source, k, run_dir, run_dir, target)
        staged, dest = RunDir(fold.folder), target.paths.fold_dir(k)
        if dest.exists():  # an unfinished attempt here: its checkpoints must not mix with the copied ones
            os.replace(dest, fold.folder / "replaced")
        os.replace(staged.fold_dir(k), dest)
        for copied, kept in zip(staged.fold_predictions(k), target.paths.fold_predictions(k)):
            if copied.exists():
                os.replace(copied, kept)
            else:
                kept.unlink(missing_ok=True)
        target.replace_fold(k, fold.record)
    return None


@contextlib.contextmanager
def fold_claim(target: RunState, k: int) -> Iterator[None]:
    """Hold fold k of `target` while its files are put in place: made by mkdir (atomic; no file locks on Drive),
    waited for up to CLAIM_WAIT_S when another merge holds it."""
    claim = target.paths.merge_claim(k)
    claim.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        try:
            claim.mkdir()
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise KitError(f"{claim}: another `kitpkg merge` is putting fold {k} in place; if none is running "
                               f"(one was killed), delete {claim} and merge again") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        claim.rmdir()


def compare_fold(source: RunState, k: int, kept_files: Path, kept_dir: Path, target: RunState) -> Optional[str]:
    """One line when `source`'s fold k differs from the copy kept (whose OOF lies in `kept_files`), else None."""
    theirs = source.paths.fold_oof(k)
    ours = RunDir(kept_files).fold_oof(k)
    if theirs.is_file() and ours.is_file() and same_predictions(theirs, ours):
        return None
    kept = target.fold(k) if kept_dir == target.run_dir else FoldRecord()
    return (f"fold {k}: trained in {kept_dir}{_score(kept)} and in {source.run_dir}"
            f"{_score(source.fold(k))} with different results; kept {kept_dir}'s (to take the other, "
            f"delete {target.fold_path(k)} and merge again)")


def same_predictions(a: Path, b: Path) -> bool:
    """True when two OOF files hold the same ids, targets and predictions (to SAME); False when one is unreadable."""
    try:
        fa, fb = P.read_csv(a), P.read_csv(b)
    except (OSError, ValueError):  # pandas' EmptyDataError and ParserError are ValueErrors
        return False
    if list(fa.columns) != list(fb.columns) or "id" not in fa.columns or list(fa["id"]) != list(fb["id"]):
        return False
    numbers = [c for c in fa.columns if c != "id"]
    return bool(((fa[numbers] - fb[numbers]).abs() <= SAME).all().all())


def _score(record: FoldRecord) -> str:
    return f" (score {record.score:.4f})" if record.scored else ""


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def _drop_stale_stages(run_dir: Path) -> None:
    """Remove staging folders that merges killed on this machine left behind (their process is gone)."""
    prefix = f"{_host()}-"
    for folder, owner in RunDir(run_dir).merge_stages():
        pid = owner[len(prefix):].split("-")[0] if owner.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
