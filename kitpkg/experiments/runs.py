"""Runs side by side: what each run directory records (config, folds, scores), whether two runs share their folds,
and the rows of the `kitpkg runs` table (table.py prints and writes it).

Everything is read back from run directories, never written into them. Two runs are comparable when they split the
same samples into the same folds *and* predict the same target: runs on one manifest (and one train.score_class)
always are; runs on other manifests of the same data (another image size from the same `kitpkg convert`) are when
their finished folds hold the same ids with the same labels -- another label column (`--label-col sex`) is not.
A run directory that cannot be read, or a fold record that cannot be used, is named below the table; the others show.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import diff_keys
from ..errors import KitError
from ..rundir import STATE_NAME, CVSummary, FoldRecord, is_run_dir
from ..task import Task
from ..train.projection import duration as _duration  # h:mm:ss, as `kitpkg plan` prints it
from ..train.projection import planned_fold_s, read_plan
from ..train.runstate import RunState

RUNS_ROOT = "runs"
NO_VALUE = "–"  # a figure a run lacks (e.g. the timing figures of cv.py, kitpkg/train/timing.py)


@dataclass
class Run:
    """A run directory read back: its state and the scores of its finished folds."""

    path: Path
    state: RunState
    done: Dict[int, FoldRecord]  # {fold: record} of the finished folds, read once
    _oof: Optional[Tuple[Dict[str, Tuple[int, float]], List[str]]] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def config(self) -> Dict[str, Any]:
        """{dotted key: value} of the keys that change results."""
        return self.state.config

    @property
    def fingerprints(self) -> Dict[str, Any]:
        """The shard fingerprints and num_classes the run was trained on."""
        return self.state.fingerprints

    @property
    def task(self) -> Task:
        """What the run predicts and how it is scored (state.json's task, or the one an older run implies)."""
        return self.state.task

    @property
    def metric(self) -> str:
        """The CV metric's name."""
        return self.task.scoring.label

    @cached_property
    def _read_scores(self) -> Tuple[Dict[int, float], List[int], List[str]]:
        """({fold: score} of the finished folds with a score, folds whose score is null, lines on unusable scores)."""
        scores, unscored, problems = {}, [], []
        for k, record in sorted(self.done.items()):
            problem = record.score_problem()
            if problem:
                problems.append(f"fold {k}: {problem} ({self.state.fold_path(k)})")
            elif record.scored:
                scores[k] = record.score
            else:
                unscored.append(k)  # one class in the fold: no AUC (cv records null)
        return scores, unscored, problems

    @property
    def scores(self) -> Dict[int, float]:
        """{fold: score} of the finished folds that have a score."""
        return self._read_scores[0]

    @property
    def unscored(self) -> List[int]:
        """Finished folds recorded without a score (null: one class in the fold)."""
        return self._read_scores[1]

    @property
    def last_mean(self) -> Optional[float]:
        """Mean score of the folds' last-epoch weights (beside `mean`: the best epoch's), when the folds record it."""
        kept = [r.last_score for r in self.done.values()]
        kept = [v for v in kept if v is not None and not np.isnan(v)]
        return float(np.mean(kept)) if kept else None

    @cached_property
    def problems(self) -> List[str]:
        """One line per thing in the run directory that cannot be used as it is (named below the table)."""
        from ..train.foldcheck import done_fold_problem

        lines = list(self._read_scores[2])
        for k in self.done:
            problem = done_fold_problem(self.path, k)
            if problem:
                lines.append(f"fold {k}: {problem}; `kitpkg cv` trains it again")
        return lines + self._oof_rows()[1]

    @property
    def mean(self) -> Optional[float]:
        """Mean fold score (None before a fold finished)."""
        return float(np.mean(list(self.scores.values()))) if self.scores else None

    @property
    def std(self) -> Optional[float]:
        """Standard deviation of the fold scores (population, as `kitpkg cv` prints it)."""
        return float(np.std(list(self.scores.values()))) if self.scores else None

    @property
    def cv(self) -> CVSummary:
        """The run's CV summary (empty until every fold finished)."""
        return self.state.cv or CVSummary()

    @property
    def oof_score(self) -> Optional[float]:
        """Pooled OOF score, once every fold finished."""
        return self.cv.oof

    @cached_property
    def folds_total(self) -> Optional[int]:
        """How many folds the run has (None when it cannot tell yet)."""
        if self.cv.folds:
            return len(self.cv.folds)
        manifest = self.manifest()
        return len(manifest.folds()) if manifest is not None else None

    @property
    def wall_s(self) -> Optional[float]:
        """Summed wall time of the finished folds, when every one of them recorded it."""
        times = [record.wall_s for record in self.done.values()]
        return float(sum(times)) if times and all(t is not None for t in times) else None

    @cached_property
    def planned_fold_s(self) -> Optional[float]:
        """The fold time `kitpkg plan` projected for this run's config (its plan.json), when it planned this config."""
        return planned_fold_s(read_plan(self.path), self.state.config_hash)

    def mean_of(self, figure: str) -> Optional[float]:
        """Mean of a per-fold figure (a FoldRecord field, e.g. train_img_s) over the finished folds that recorded it."""
        values = [getattr(record, figure) for record in self.done.values()]
        values = [float(v) for v in values if v is not None]
        return float(np.mean(values)) if values else None

    @property
    def device(self) -> Optional[str]:
        """The device(s) and precision(s) the finished folds ran on, e.g. "T4 (sm 7.5) 16-mixed + channels_last"."""
        found = {f"{r.device} {r.precision or ''}".strip() for r in self.done.values() if r.device}
        return ", ".join(sorted(found)) or None

    def fold_of(self) -> Dict[str, int]:
        """{sample id: fold} of the finished folds' OOF rows."""
        return {i: fold for i, (fold, _) in self._oof_rows()[0].items()}

    def target_of(self) -> Dict[str, Any]:
        """{sample id: target} of the finished folds' OOF rows."""
        return {i: target for i, (_, target) in self._oof_rows()[0].items()}

    def _oof_rows(self) -> Tuple[Dict[str, Tuple[int, float]], List[str]]:
        """({sample id: (fold, target)} of the finished folds' readable OOF files, lines on unreadable ones (a missing
        or empty file is named by `problems` already)."""
        if self._oof is None:
            from ..predictions import read_truth
            from ..tables import read_csv

            rows, problems = {}, []
            for k in self.done:
                path = self.state.paths.fold_oof(k)
                if not path.is_file() or path.stat().st_size == 0:
                    continue
                try:
                    truth = read_truth(read_csv(path), self.task.scored())
                    targets = [tuple(t) if np.ndim(t) else float(t) for t in truth.target]  # several columns: a tuple
                    rows.update(zip(truth.ids, zip(truth.fold.astype(int).tolist(), targets)))
                except (OSError, ValueError, KeyError) as err:
                    problems.append(f"fold {k}: {path.name} unreadable ({str(err).splitlines()[0][:80]})")
            self._oof = (rows, problems)
        return self._oof

    @property
    def label_col(self) -> Optional[str]:
        """The label column of the run's manifest, when the manifest is where the run recorded it."""
        manifest = self.manifest()
        return manifest.label_col if manifest is not None else None

    def manifest(self):
        """The run's manifest at its recorded relative location, when it is there and is the run's (else None)."""
        from ..shards.manifest import load_manifest
        from ..train.runstate import manifest_fingerprint

        hint = self.state.shards
        if not hint:
            return None
        try:
            manifest = load_manifest(str(self.path / hint))
        except (OSError, ValueError, KitError):
            return None
        return manifest if manifest_fingerprint(manifest) == self.fingerprints.get("manifest") else None


def load_run(path: os.PathLike) -> Run:
    """Read a run directory as it is (its state and finished folds; nothing is written)."""
    state = RunState.read(path)
    return Run(Path(path), state, {k: state.fold(k) for k in state.done_folds()})


def find_runs(dirs: Sequence[os.PathLike] = ()) -> List[Run]:
    """The runs of `dirs` (each a run directory or a folder of them; default: every run under runs/), in that order;
    KitError naming the first that cannot be read."""
    runs, unreadable = read_runs(dirs)
    if unreadable:
        raise KitError(unreadable[0])
    return runs


def read_runs(dirs: Sequence[os.PathLike] = ()) -> Tuple[List[Run], List[str]]:
    """(the readable runs of `dirs`, as find_runs, one line per run directory that cannot be read)."""
    found: List[Path] = []
    for d in [Path(d) for d in dirs] or [Path(RUNS_ROOT)]:
        if is_run_dir(d):
            found.append(d)
            continue
        if ensemble_kind(d):  # a blend or stack: read_ensembles lists it
            continue
        children = sorted(p.parent for p in d.glob(f"*/{STATE_NAME}"))
        if not children and not ensemble_dirs(d):
            raise KitError(f"{d}: no run directory here (no {STATE_NAME} in it or its subfolders); pass run "
                           f"directories of `kitpkg cv`")
        found += children
    runs, unreadable = [], []
    for path in {p.resolve(): p for p in found}.values():
        try:
            runs.append(load_run(path))
        except KitError as err:
            unreadable.append(f"{path}: {err}" if str(path) not in str(err) else str(err))
    return runs, unreadable


def split_difference(a: Dict[str, int], b: Dict[str, int]) -> Optional[str]:
    """Why two {id: fold} splits differ ("samples in other folds", "other samples"); None when they agree."""
    moved = sorted(i for i in a.keys() & b.keys() if a[i] != b[i])
    if moved:
        return f"{len(moved)} samples in other folds (e.g. {moved[0]}: fold {a[moved[0]]} vs {b[moved[0]]})"
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a or only_b:
        example = only_a[0] if only_a else only_b[0]
        return f"other samples ({len(only_a)} only in the first, {len(only_b)} only in the second, e.g. {example})"
    return None


def folds_difference(a: Run, b: Run) -> Optional[str]:
    """Why two runs are not comparable (another task, another target, or another split of their common folds); None
    when they are."""
    ta, tb = a.task, b.task
    if (ta.kind, ta.outputs) != (tb.kind, tb.outputs):
        return f"another task ({ta.describe()} vs {tb.describe()})"
    if ta.score_class != tb.score_class:
        return f"another target (train.score_class: {ta.score_class} vs {tb.score_class})"
    if ta.metric != tb.metric:
        return f"another metric ({ta.scoring.label} vs {tb.scoring.label})"
    if a.fingerprints.get("manifest") == b.fingerprints.get("manifest"):
        return None  # one manifest: one split, one label column
    common = set(a.done) & set(b.done)
    if not common:
        return "another manifest, and no fold finished in both to compare the split and the target by"
    fa, fb = a.fold_of(), b.fold_of()
    diff = split_difference({i: k for i, k in fa.items() if k in common}, {i: k for i, k in fb.items() if k in common})
    if diff:
        return f"other folds: {diff}"
    return target_difference(a, b, [i for i, k in fa.items() if k in common and i in fb])


def target_difference(a: Run, b: Run, ids: Sequence[str]) -> Optional[str]:
    """Why two runs predict other things for the same samples `ids` (other labels, e.g. another --label-col); None
    when every label agrees."""
    ta, tb = a.target_of(), b.target_of()
    other = [i for i in ids if np.shape(ta[i]) != np.shape(tb[i]) or np.max(np.abs(np.subtract(ta[i], tb[i]))) > 1e-9]
    if not other:
        return None
    columns = f"label column {a.label_col} vs {b.label_col} (" if a.label_col != b.label_col else "("
    return (f"another target: {columns}{len(other)} of {len(ids)} samples labelled differently, e.g. {other[0]}: "
            f"{_label(ta[other[0]])} vs {_label(tb[other[0]])})")


def _label(value: Any) -> str:
    """A target as text: 1, 0.25 or (several label columns) 1/0/2.5."""
    return "/".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def differences(ref: Run, run: Run) -> List[str]:
    """What makes `run` differ from `ref`: config keys (`key: old -> new`) and other training data."""
    lines = diff_keys(ref.config, run.config)
    if ref.fingerprints.get("extra_train") != run.fingerprints.get("extra_train"):
        lines.append("data.extra_train: other shard sets")
    if ref.fingerprints.get("manifest") != run.fingerprints.get("manifest") and not any(
            line.startswith("data.image_size:") for line in lines):  # another size is another manifest anyway
        lines.append("data.shards: another manifest")
    return lines


@dataclass
class Row:
    """One run's line of the table."""

    run: Run
    comparable: bool
    notes: List[str]  # why not comparable (first), then the differences from the reference

    def cells(self) -> Dict[str, str]:
        """The row as display strings, keyed by column."""
        r = self.run
        return {"run": r.name, "model": str(r.config.get("model.name", NO_VALUE)),
                "size": str(r.config.get("data.image_size", NO_VALUE)),
                "epochs": str(r.config.get("train.epochs", NO_VALUE)),
                "CV": NO_VALUE if r.mean is None else f"{r.mean:.4f} ± {r.std:.4f} {r.metric}",
                "last-epoch CV": NO_VALUE if r.last_mean is None else f"{r.last_mean:.4f}",
                "OOF": NO_VALUE if r.oof_score is None else f"{r.oof_score:.4f}",
                "folds": _folds_cell(r),
                "wall": _duration(r.wall_s),
                "fold plan/actual": f"{_duration(r.planned_fold_s)} / {_duration(r.mean_of('wall_s'))}",
                "img/s": _rate(r.mean_of("train_img_s")),
                "loader img/s": _rate(r.mean_of("loader_img_s")), "wait": _share(r.mean_of("loader_wait")),
                "device": r.device or NO_VALUE, "comparable": "yes" if self.comparable else "NO",
                "differs": "; ".join(self.notes) or NO_VALUE}


def _folds_cell(run: Run) -> str:
    """"done/total", with the finished folds that have no score (one class) said: the mean is over the others."""
    cell = f"{len(run.done)}/{run.folds_total if run.folds_total is not None else '?'}"
    return cell + (f" ({len(run.unscored)} unscored)" if run.unscored else "")


def _rate(value: Optional[float]) -> str:
    return NO_VALUE if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _share(value: Optional[float]) -> str:
    return NO_VALUE if value is None else f"{100 * value:.0f}%"


def compare(runs: Sequence[Run]) -> List[Row]:
    """Rows against the first run (the reference), best mean CV first in the direction of the reference's metric
    (lowest first for an error such as RMSE); runs with no finished fold last."""
    if not runs:
        raise KitError("no runs to compare")
    ref = runs[0]
    rows = []
    for run in runs:
        try:
            why = None if run is ref else folds_difference(ref, run)
            row = Row(run, why is None, ([why] if why else []) + differences(ref, run))
            row.cells()
        except (KitError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # a hand-edited file
            run.problems.append(f"cannot be shown ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            continue
        rows.append(row)
    higher = _higher_is_better(ref)
    return sorted(rows, key=lambda row: (row.run.mean is None, -(row.run.mean or 0.0) if higher else
                                         (row.run.mean or 0.0)))


def _higher_is_better(run: Run) -> bool:
    """The direction of a run's metric (higher when it cannot be read: a hand-edited or moved run)."""
    try:
        return run.task.scoring.higher_is_better
    except (KitError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return True


ENSEMBLE_FILES = {"blend": "blend.json", "stack": "stack.json"}  # what `kitpkg blend` / `kitpkg stack` write


def ensemble_kind(path: Path) -> Optional[str]:
    """"blend" or "stack" when `path` is a folder `kitpkg blend` or `kitpkg stack` wrote, else None."""
    return next((kind for kind, name in ENSEMBLE_FILES.items() if (Path(path) / name).is_file()), None)


def ensemble_dirs(folder: Path) -> List[Path]:
    """The blend and stack folders of `folder` (itself, or its subfolders)."""
    if ensemble_kind(folder):
        return [folder]
    return sorted({p.parent for name in ENSEMBLE_FILES.values() for p in Path(folder).glob(f"*/{name}")})


@dataclass
class Ensemble:
    """A blend or stack folder read back from its blend.json / stack.json: a row of the second `kitpkg runs` table."""

    path: Path
    kind: str
    record: Dict[str, Any]

    @property
    def scores(self) -> Dict[str, Any]:
        """{mean, std, oof} of what it wrote: the stack's nested CV, or the written blend method's."""
        return self.record["stack"] if self.kind == "stack" else self.record["methods"][self.record["method"]]

    def cells(self) -> Dict[str, str]:
        """The row as display strings, keyed by column."""
        r, s = self.record, self.scores
        how = (f"{r['model']}, {r['seeds']} seed{'s' if r['seeds'] > 1 else ''}" if self.kind == "stack"
               else r["method"])
        return {"name": self.path.resolve().name, "kind": f"{self.kind} ({how})",
                "CV": f"{s['mean']:.4f} ± {s['std']:.4f} {r['metric']}", "OOF": f"{s['oof']:.4f}",
                "runs": ", ".join(m["run"] for m in r["runs"])}


def read_ensembles(dirs: Sequence[os.PathLike] = ()) -> Tuple[List[Ensemble], List[str]]:
    """(the blends and stacks of `dirs` (default: under runs/), best CV first; one line per one that cannot be
    read)."""
    import json

    found, problems = [], []
    for d in [Path(d) for d in dirs] or [Path(RUNS_ROOT)]:
        for path in ensemble_dirs(d) if d.is_dir() else []:
            kind = ensemble_kind(path)
            try:
                ensemble = Ensemble(path, kind, json.loads((path / ENSEMBLE_FILES[kind]).read_text()))
                ensemble.cells()
            except (OSError, ValueError, KeyError, TypeError) as err:
                problems.append(f"{path}: {ENSEMBLE_FILES[kind]} unreadable ({str(err).splitlines()[0][:80]})")
                continue
            found.append(ensemble)
    unique = list({e.path.resolve(): e for e in found}.values())
    return sorted(unique, key=lambda e: -e.scores["mean"] * (1 if e.record.get("higher_is_better", True) else -1)), \
        problems
