"""The `kitpkg runs` table: printed (rich when installed, else aligned text) and written as runs.md + runs.png, with
the run directories that cannot be read, or not used as they are, named below it (see runs.py for what is compared).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..errors import KitError
from ..fsutil import atomic_write_text
from ..rundir import is_run_dir
from .runs import RUNS_ROOT, Ensemble, Row, compare, read_ensembles, read_runs


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
    from ..plots import pyplot, save_figure

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


def write_runs_report(rows: Sequence[Row], out: Path, reference: str, problems: Sequence[str] = (),
                      ensembles: Sequence[Ensemble] = ()) -> Path:
    """runs.md (the table, the blends and stacks `ensembles`, the plot, the `problems` lines) in `out`; return its
    path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Runs", "", f"Best mean CV first. Differences and comparability are against `{reference}`; runs marked "
             "NO split their samples into other folds, so their scores cannot be compared (nor blended).", ""]
    lines += markdown_table(rows) + [""]
    if ensembles:  # Ensemble has the cells() the table functions read
        lines += ["Blends and stacks (best CV first; a stack's and a fitted blend's CV are nested):", ""]
        lines += markdown_table(ensembles) + [""]  # type: ignore[arg-type]
    if problems:
        lines += ["Run directories that cannot be read, or not used as they are:", ""]
        lines += [f"- {line}" for line in problems] + [""]
    if any(row.run.scores for row in rows):
        lines += [f"![CV per run]({plot_runs(rows, out / 'runs.png')})", ""]
    if all(row.run.wall_s is None for row in rows):
        lines += ["Wall time: not recorded by these runs.", ""]
    lines += ["img/s: training images per second (mean over folds); loader img/s: what the training loader delivers "
              "alone, without the model; wait: share of training time spent waiting for batches. A loader rate near "
              "img/s with a high wait means the loader is the bottleneck (more workers, smaller images); a loader "
              "rate far above it means the GPU is. fold plan/actual: the fold time `kitpkg plan` projected for the "
              "run's config (its plan.json) beside the mean wall time of its finished folds.", ""]
    path = out / "runs.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def default_out(dirs: Sequence[os.PathLike]) -> Path:
    """Where runs.md goes by default: runs/, or the folder the given run directories share."""
    if not dirs:
        return Path(RUNS_ROOT)
    parents = [str(Path(d).resolve().parent) if is_run_dir(Path(d)) else str(Path(d).resolve())
               for d in dirs]
    return Path(os.path.commonpath(parents))


def show_runs(dirs: Sequence[os.PathLike] = (), out: Optional[os.PathLike] = None) -> Path:
    """`kitpkg runs`: print the comparison table, write runs.md + runs.png; return the runs.md path.

    A run directory that cannot be read, and what cannot be used in a readable one, is named (stderr, runs.md) below
    the table of the others."""
    runs, unreadable = read_runs(dirs)
    rows = compare(runs) if runs else []
    ensembles, unread = read_ensembles(dirs)
    problems = unreadable + unread + [f"{run.path}: {line}" for run in runs for line in run.problems]
    if not rows:
        raise KitError(problems[0] if problems else "no runs to compare")
    print_table(rows, runs[0].name)
    if ensembles:
        print("\nblends and stacks, best first\n" + plain_table(ensembles))  # type: ignore[arg-type]
    for line in problems:
        print(f"kitpkg runs: {line}", file=sys.stderr)
    return write_runs_report(rows, Path(out) if out else default_out(dirs), runs[0].name, problems, ensembles)
