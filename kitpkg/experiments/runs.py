"""Runs side by side: what each run directory records (config, folds, scores), whether two runs share their folds,
and the `kitpkg runs` table (terminal, runs.md, runs.png).

Everything is read back from run directories, never written into them. Two runs are comparable when they split the
same samples into the same folds: runs on one manifest always are; runs on other manifests of the same data (another
image size from the same `kitpkg convert`) are when their finished folds hold the same ids.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..config import diff_keys
from ..errors import KitError
from ..fsutil import atomic_write_text
from ..train.runstate import STATE_NAME, RunState, scored_by_auc

RUNS_ROOT = "runs"
NO_VALUE = "–"
WALL_KEY = "wall_s"  # per-fold figures recorded by cv.py (see kitpkg/train/timing.py); "–" where a run lacks them


@dataclass
class Run:
    """A run directory read back: its state and the scores of its finished folds."""

    path: Path
    state: RunState
    done: Dict[int, Dict[str, Any]]  # {fold: record} of the finished folds, read once
    _fold_of: Optional[Dict[str, int]] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def config(self) -> Dict[str, Any]:
        """{dotted key: value} of the keys that change results."""
        return self.state.get("config", {})

    @property
    def data(self) -> Dict[str, Any]:
        """The shard fingerprints and num_classes the run was trained on."""
        return self.state.get("data", {})

    @property
    def binary(self) -> bool:
        """Scored by AUC: one logit (sigmoid) target, or one class of many (train.score_class)."""
        return scored_by_auc(self.state.data)

    @property
    def metric(self) -> str:
        """The CV metric's name."""
        return "AUC" if self.binary else "accuracy"

    @property
    def scores(self) -> Dict[int, float]:
        """{fold: score} of the finished folds."""
        return {k: float(record["score"]) for k, record in self.done.items()}

    @property
    def mean(self) -> Optional[float]:
        """Mean fold score (None before a fold finished)."""
        return float(np.mean(list(self.scores.values()))) if self.scores else None

    @property
    def std(self) -> Optional[float]:
        """Standard deviation of the fold scores (population, as `kitpkg cv` prints it)."""
        return float(np.std(list(self.scores.values()))) if self.scores else None

    @property
    def oof_score(self) -> Optional[float]:
        """Pooled OOF score, once every fold finished."""
        return (self.state.get("cv") or {}).get("oof")

    @cached_property
    def folds_total(self) -> Optional[int]:
        """How many folds the run has (None when it cannot tell yet)."""
        cv = self.state.get("cv") or {}
        if cv.get("folds"):
            return len(cv["folds"])
        manifest = self._manifest()
        return len(manifest.folds()) if manifest is not None else None

    @property
    def wall_s(self) -> Optional[float]:
        """Summed wall time of the finished folds, when every one of them recorded it."""
        times = [record.get(WALL_KEY) for record in self.done.values()]
        return float(sum(times)) if times and all(t is not None for t in times) else None

    def mean_of(self, key: str) -> Optional[float]:
        """Mean of a per-fold figure (e.g. train_img_s) over the finished folds that recorded it."""
        values = [float(record[key]) for record in self.done.values() if record.get(key) is not None]
        return float(np.mean(values)) if values else None

    @property
    def device(self) -> Optional[str]:
        """The device(s) and precision(s) the finished folds ran on, e.g. "T4 (sm 7.5) 16-mixed + channels_last"."""
        found = {f"{r['device']} {r.get('precision', '')}".strip() for r in self.done.values() if r.get("device")}
        return ", ".join(sorted(found)) or None

    def fold_of(self) -> Dict[str, int]:
        """{sample id: fold} of the finished folds' OOF rows."""
        if self._fold_of is None:
            from ..train.predict import read_csv

            self._fold_of = {}
            for k in self.done:
                frame = read_csv(self.path / f"oof_fold{k}.csv")
                self._fold_of.update(zip(frame["id"], frame["fold"].astype(int)))
        return self._fold_of

    def _manifest(self):
        """The run's manifest at its recorded relative location, when it is there and is the run's (else None)."""
        from ..shards.manifest import load_manifest
        from ..train.runstate import manifest_fingerprint

        hint = self.state.get("shards")
        if not hint:
            return None
        try:
            manifest = load_manifest(str(self.path / hint))
        except (OSError, ValueError):
            return None
        return manifest if manifest_fingerprint(manifest) == self.data.get("manifest") else None


def load_run(path: os.PathLike) -> Run:
    """Read a run directory as it is (its state and finished folds; nothing is written)."""
    state = RunState.read(path)
    return Run(Path(path), state, {k: state.fold(k) for k in state.done_folds()})


def find_runs(dirs: Sequence[os.PathLike] = ()) -> List[Run]:
    """The runs of `dirs` (each a run directory or a folder of them; default: every run under runs/), in that order."""
    found: List[Path] = []
    for d in [Path(d) for d in dirs] or [Path(RUNS_ROOT)]:
        if (d / STATE_NAME).exists():
            found.append(d)
            continue
        children = sorted(p.parent for p in d.glob(f"*/{STATE_NAME}"))
        if not children:
            raise KitError(f"{d}: no run directory here (no {STATE_NAME} in it or its subfolders); pass run "
                           f"directories of `kitpkg cv`")
        found += children
    unique = list({p.resolve(): p for p in found}.values())
    return [load_run(p) for p in unique]


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
    """Why two runs are not comparable (another task or another split of their common folds); None when they are."""
    if a.data.get("num_classes") != b.data.get("num_classes"):
        return f"another task (num_classes {a.data.get('num_classes')} vs {b.data.get('num_classes')})"
    if a.data.get("manifest") == b.data.get("manifest"):
        return None  # one manifest: one split
    common = set(a.done) & set(b.done)
    if not common:
        return "another manifest, and no fold finished in both to compare the split by"
    fa, fb = a.fold_of(), b.fold_of()
    diff = split_difference({i: k for i, k in fa.items() if k in common}, {i: k for i, k in fb.items() if k in common})
    return f"other folds: {diff}" if diff else None


def differences(ref: Run, run: Run) -> List[str]:
    """What makes `run` differ from `ref`: config keys (`key: old -> new`) and other training data."""
    lines = diff_keys(ref.config, run.config)
    if ref.data.get("extra_train") != run.data.get("extra_train"):
        lines.append("data.extra_train: other shard sets")
    if ref.data.get("manifest") != run.data.get("manifest") and not any(
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
                "OOF": NO_VALUE if r.oof_score is None else f"{r.oof_score:.4f}",
                "folds": f"{len(r.scores)}/{r.folds_total if r.folds_total is not None else '?'}",
                "wall": _duration(r.wall_s), "img/s": _rate(r.mean_of("train_img_s")),
                "loader img/s": _rate(r.mean_of("loader_img_s")), "wait": _share(r.mean_of("loader_wait")),
                "device": r.device or NO_VALUE, "comparable": "yes" if self.comparable else "NO",
                "differs": "; ".join(self.notes) or NO_VALUE}


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return NO_VALUE
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"


def _rate(value: Optional[float]) -> str:
    return NO_VALUE if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _share(value: Optional[float]) -> str:
    return NO_VALUE if value is None else f"{100 * value:.0f}%"


def compare(runs: Sequence[Run]) -> List[Row]:
    """Rows against the first run (the reference), best mean CV first; runs with no finished fold last."""
    if not runs:
        raise KitError("no runs to compare")
    ref = runs[0]
    rows = []
    for run in runs:
        why = None if run is ref else folds_difference(ref, run)
        notes = ([why] if why else []) + differences(ref, run)
        rows.append(Row(run, why is None, notes))
    return sorted(rows, key=lambda row: (row.run.mean is None, -(row.run.mean or 0.0)))


def markdown_table(rows: Sequence[Row]) -> List[str]:
    """The rows as a markdown table (the reference marked)."""
    cells = [row.cells() for row in rows]
    header = list(cells[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(c[h].replace("|", "\\|") for h in header) + " |" for c in cells]


def plain_table(rows: Sequence[Row]) -> str:
    """The rows as aligned plain text (the terminal without rich)."""
    cells = [row.cells() for row in rows]
    header = list(cells[0])
    widths = {h: max(len(h), *(len(c[h]) for c in cells)) for h in header}
    lines = ["  ".join(h.ljust(widths[h]) for h in header)]
    lines += ["  ".join(c[h].ljust(widths[h]) for h in header).rstrip() for c in cells]
    return "\n".join(lines)


def print_table(rows: Sequence[Row], reference: str) -> None:
    """Print the rows: a rich table when rich is installed, else aligned text."""
    title = f"runs, best first (reference: {reference})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title + "\n" + plain_table(rows))
        return
    table = Table(title=title)
    *fixed, notes = rows[0].cells()
    for header in fixed:
        table.add_column(header, no_wrap=True)
    table.add_column(notes, overflow="fold", min_width=20)
    for row in rows:
        table.add_row(*row.cells().values(), style=None if row.comparable else "dim")
    console = Console()
    # piped (a notebook cell, a log): rich assumes 80 columns, too narrow for this table
    (console if console.is_terminal else Console(width=200)).print(table)


def plot_runs(rows: Sequence[Row], path: Path) -> str:
    """CV per run, best first: each fold's score as a point, mean ± std as a bar; non-comparable runs in grey."""
    from ..train.report import pyplot, save_figure

    plt = pyplot()
    scored = [row for row in rows if row.run.scores]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(scored) + 2), 3.8))
    for x, row in enumerate(scored):
        color = "tab:blue" if row.comparable else "grey"
        folds = sorted(row.run.scores)
        offsets = np.linspace(-0.15, 0.15, len(folds)) if len(folds) > 1 else [0.0]
        ax.scatter([x + o for o in offsets], [row.run.scores[k] for k in folds], s=14, color=color, alpha=0.6)
        ax.errorbar(x, row.run.mean, yerr=row.run.std, fmt="D", color="black" if row.comparable else "grey",
                    capsize=4, markersize=5)
    ax.set_xticks(range(len(scored)))
    ax.set_xticklabels([_label(row) for row in scored], rotation=30, ha="right", fontsize=8)
    metric = scored[0].run.metric if scored else "score"
    ax.set(ylabel=f"CV {metric}", title=f"CV {metric} per run (folds as points, mean ± std), best first")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _label(row: Row) -> str:
    """A run's name on the plot, with what a reader must know before comparing its score."""
    label = row.run.name
    if row.run.folds_total is None or len(row.run.scores) < row.run.folds_total:
        label += f"\n({row.cells()['folds']} folds)"
    return label + ("" if row.comparable else "\n(not comparable)")


def write_runs_report(rows: Sequence[Row], out: Path, reference: str) -> Path:
    """runs.md (the table, the plot) in `out`; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Runs", "", f"Best mean CV first. Differences and comparability are against `{reference}`; runs marked "
             "NO split their samples into other folds, so their scores cannot be compared (nor blended).", ""]
    lines += markdown_table(rows) + [""]
    if any(row.run.scores for row in rows):
        lines += [f"![CV per run]({plot_runs(rows, out / 'runs.png')})", ""]
    if all(row.run.wall_s is None for row in rows):
        lines += ["Wall time: not recorded by these runs.", ""]
    lines += ["img/s: training images per second (mean over folds); loader img/s: what the training loader delivers "
              "alone, without the model; wait: share of training time spent waiting for batches. A loader rate near "
              "img/s with a high wait means the loader is the bottleneck (more workers, smaller images); a loader "
              "rate far above it means the GPU is.", ""]
    path = out / "runs.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def default_out(dirs: Sequence[os.PathLike]) -> Path:
    """Where runs.md goes by default: runs/, or the folder the given run directories share."""
    if not dirs:
        return Path(RUNS_ROOT)
    parents = [str(Path(d).resolve().parent) if (Path(d) / STATE_NAME).exists() else str(Path(d).resolve())
               for d in dirs]
    return Path(os.path.commonpath(parents))


def show_runs(dirs: Sequence[os.PathLike] = (), out: Optional[os.PathLike] = None) -> Path:
    """`kitpkg runs`: print the comparison table, write runs.md + runs.png; return the runs.md path."""
    runs = find_runs(dirs)
    rows = compare(runs)
    print_table(rows, runs[0].name)
    return write_runs_report(rows, Path(out) if out else default_out(dirs), runs[0].name)
