"""`kitpkg merge DIR … --config C [--into DIR]`: run directories of one experiment, trained on different machines
(`kitpkg cv --folds 0,1` here, `--folds 2,3,4` there), put together and finished without retraining.

Every directory must hold a run of the given config on the same shard sets (refused otherwise, naming the keys that
differ). Each finished fold of a source is copied into the target -- its checkpoints and metrics (fold{k}/), its OOF
and test predictions (oof_fold{k}.csv, test_fold{k}.csv), and its record (folds/fold{k}.json) last, so a fold shows as
done only once its files are in place. A fold already finished in the target is kept: when the source's predictions
of it differ, that is reported (one line naming both directories), never overwritten. Then OOF, CV score, submission
and report are written from all folds, as `kitpkg cv` would.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..config import Config
from ..errors import KitError
from ..fsutil import atomic_copy
from . import predict as P
from .cv import CVResult, finish, fold_selection, load_data, open_run
from .runstate import RunState

SAME = 1e-6  # predictions closer than this are the same result (what a deterministic re-run reproduces)


def merge_runs(config: Config, dirs: Sequence[os.PathLike], into: Optional[os.PathLike] = None
               ) -> Tuple[CVResult, List[str]]:
    """Copy the finished folds of `dirs` into `into` (default: the first of them), then finish the run there.

    Returns the run's result and one line per fold finished in two directories with different results."""
    if not dirs:
        raise KitError("merge: name the run directories to merge")
    sources = [RunState.read(d) for d in dirs]  # each must be a run directory (KitError naming it otherwise)
    data = load_data(config)
    fingerprints = data.fingerprints()
    for source in sources:  # all checked before anything is written
        problem = source.mismatch(config, fingerprints)
        if problem:
            raise KitError(f"merge: {problem}")
    data, state = open_run(config, into if into is not None else sources[0].run_dir, data=data)
    conflicts = []
    for source in sources:
        if source.run_dir.resolve() == state.run_dir.resolve():
            continue
        for k in source.done_folds():
            line = merge_fold(source, state, k)
            if line:
                conflicts.append(line)
    all_folds, _ = fold_selection(config, data)
    return finish(config, data, state, all_folds), conflicts


def merge_fold(source: RunState, target: RunState, k: int) -> Optional[str]:
    """Copy finished fold k from `source` into `target` unless the target has it; a line when both differ."""
    if not target.is_done(k):
        copy_fold(source, target, k)
        return None
    if same_predictions(source.run_dir / f"oof_fold{k}.csv", target.run_dir / f"oof_fold{k}.csv"):
        return None
    ours, theirs = target.fold(k).get("score"), source.fold(k).get("score")
    return (f"fold {k}: trained in {target.run_dir} (score {_fmt(ours)}) and in {source.run_dir} (score "
            f"{_fmt(theirs)}) with different results; kept {target.run_dir}'s (to take the other, delete "
            f"{target.fold_path(k)} and merge again)")


def copy_fold(source: RunState, target: RunState, k: int) -> None:
    """Copy fold k's files (fold{k}/, its OOF and test predictions), then its record, from `source` to `target`."""
    src, dest = source.run_dir, target.run_dir
    folder = dest / f"fold{k}"
    if folder.exists():  # an unfinished attempt here: its checkpoints must not mix with the copied ones
        shutil.rmtree(folder)
    if (src / f"fold{k}").is_dir():
        for path in sorted((src / f"fold{k}").rglob("*")):
            if path.is_file() and "parts" not in path.relative_to(src).parts:
                atomic_copy(path, dest / path.relative_to(src))
    for name in (f"oof_fold{k}.csv", f"test_fold{k}.csv"):
        if (src / name).exists():
            atomic_copy(src / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)
    target.replace_fold(k, source.fold(k))


def same_predictions(a: Path, b: Path) -> bool:
    """True when two OOF files hold the same ids, targets and predictions (to SAME)."""
    fa, fb = P.read_csv(a), P.read_csv(b)
    if list(fa.columns) != list(fb.columns) or list(fa["id"]) != list(fb["id"]):
        return False
    numbers = [c for c in fa.columns if c != "id"]
    return bool(((fa[numbers] - fb[numbers]).abs() <= SAME).all().all())


def _fmt(score: Optional[float]) -> str:
    return "?" if score is None else f"{float(score):.4f}"
