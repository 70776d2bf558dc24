"""CLI subcommands of kitpkg.experiments (argument parsing only; the work is one call into the library)."""
from __future__ import annotations

import argparse


def _runs(args: argparse.Namespace) -> int:
    from .table import show_runs

    path = show_runs(args.dirs, args.out)
    print(f"table: {path}")
    return 0


def _blend(args: argparse.Namespace) -> int:
    from .blend import run_blend

    summary = run_blend(args.runs, args.out, args.method, args.sample_submission)
    metric = summary["metric"]
    for r in summary["runs"]:
        print(f"run {r['run']}: CV {metric} {r['mean']:.4f} ± {r['std']:.4f} (pooled OOF {r['oof']:.4f})")
    for name, s in summary["methods"].items():
        extra = " (nested: weights fitted without the scored fold)" if name == "fit" else ""
        print(f"blend {name}: CV {metric} {s['mean']:.4f} ± {s['std']:.4f} (pooled OOF {s['oof']:.4f}){extra}")
    fitted = summary["methods"].get("fit", {}).get("weights")
    if fitted:
        weights = ", ".join(f"{r['run']} {w:.3f}" for r, w in zip(summary["runs"], fitted))
        print(f"fitted weights (all OOF, used for the test): {weights}")
    print(f"wrote {summary['method']} blend: {args.out} (report: {summary['report']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `kitpkg` parser."""
    p = sub.add_parser("runs", help="compare run directories: config differences, CV ± spread, comparability",
                       description="One table of runs (best CV first) in the terminal and as runs.md + runs.png.")
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help="run directories or folders of them (default: every run under runs/)")
    p.add_argument("--out", default=None,
                   help="folder for runs.md and runs.png (default: runs/, or the folder the runs share)")
    p.set_defaults(func=_runs)

    p = sub.add_parser("blend", help="blend finished runs on the same folds: mean, rank mean, fitted weights",
                       description="Blend runs on their OOF predictions; the fitted blend's CV is nested (honest).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories (same folds, same test ids)")
    p.add_argument("--out", required=True, help="folder for the blend's oof.csv, submission.csv and report.md")
    p.add_argument("--method", choices=("fit", "mean", "rank"), default=None,
                   help="blend written to oof.csv/submission.csv (default: fit, or mean for multiclass and ordinal "
                        "runs); every method the runs' kind allows is scored in report.md")
    p.add_argument("--sample-submission", default=None, metavar="PATH",
                   help="the competition's sample_submission.csv: the blend's submission takes its columns, ids and "
                        "row order (as output.sample_submission does for a run; default: the kit's layout)")
    p.set_defaults(func=_blend)
