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


def _stack(args: argparse.Namespace) -> int:
    from .stack import best_blend, columns_option, run_stack

    summary = run_stack(args.runs, args.out, columns_option(args.columns), args.group_col, args.model, args.seeds,
                        args.sample_submission)
    metric, stack = summary["metric"], summary["stack"]
    for r in summary["runs"]:
        print(f"run {r['run']}: CV {metric} {r['mean']:.4f} ± {r['std']:.4f} (pooled OOF {r['oof']:.4f})")
    name, best = best_blend(summary)
    print(f"best blend ({name}): CV {metric} {best['mean']:.4f} ± {best['std']:.4f}")
    print(f"stack ({summary['model']}, {len(summary['features'])} features): CV {metric} {stack['mean']:.4f} ± "
          f"{stack['std']:.4f} (pooled OOF {stack['oof']:.4f}; nested: fold k's level-2 model never saw fold k)")
    print(f"wrote stack: {args.out} (report: {summary['report']})")
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

    p = sub.add_parser("stack", help="a level-2 model (LightGBM or linear) on runs' OOF, tabular and group features",
                       description="Stack finished runs: a level-2 model on their OOF predictions, manifest columns and "
                                   "patient-relative features; its CV is nested (fold k's model never saw fold k).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories (same folds, same test ids)")
    p.add_argument("--out", required=True, help="folder for the stack's oof.csv, submission.csv and report.md")
    p.add_argument("--columns", default=None, metavar="A,B",
                   help="manifest columns to add as features (e.g. age_approx,sex, or a YAML file listing them; "
                        "text becomes a category)")
    p.add_argument("--group-col", default="auto", metavar="COL",
                   help="column of the group features (each prediction against its group's: minus the mean, rank, "
                        "z-score; the group's size); default auto: the convert's group column; none: off")
    p.add_argument("--model", choices=("lgbm", "linear"), default="lgbm",
                   help="level-2 model: LightGBM (default) or logistic/ridge regression (scikit-learn)")
    p.add_argument("--seeds", type=int, default=3, help="LightGBM seeds averaged (default 3)")
    p.add_argument("--sample-submission", default=None, metavar="PATH",
                   help="the competition's sample_submission.csv: the submission takes its columns, ids and row order")
    p.set_defaults(func=_stack)
