"""The whole job on built-in synthetic data: demo data → shards → verify → K-fold CV → CV AUC, OOF, submission, report.

`make demo` runs `kitpkg demo --out demo`. Every step is the same library call a user makes, and every step resumes:
re-running after a crash keeps the demo data, the complete shards and the finished folds.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from .shards.formats import DEFAULT_FORMAT, FORMATS

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def run_demo(out: str = "demo", fmt: str = DEFAULT_FORMAT, overrides: Sequence[str] = ()):
    """Run the demo end to end under `out`; return the CVResult."""
    from . import fsutil

    out_dir = fsutil.ensure_folder(Path(out).resolve(), "--out folder")  # before the slow imports below
    from .shards.convert import summarize
    from .shards.verify import verify
    from .train.cv import run_cv

    config = demo_config(out_dir, overrides)
    size = config.data.image_size
    step(1, f"demo data → {out_dir / 'source'}; shards → {out_dir / 'shards' / str(size)} ({fmt}, {size} px, 5 folds)")
    manifest = demo_shards(out_dir / "source", out_dir / "shards", size, fmt=fmt)
    print(summarize(manifest))
    step(2, "verify")
    problems = verify(manifest)
    if problems:
        raise SystemExit("verify found damage:\n" + "\n".join(problems))
    print(f"verify: OK, {len(manifest.shards)} shards match the manifest (bytes, sha256, CRCs, counts)")
    step(3, f"cv ({config.model.name}, {config.train.epochs} epochs per fold) → {config.output.run_dir}")
    result = run_cv(config)
    print(result.summary())
    return result


def demo_config(out_dir: Path, overrides: Sequence[str] = ()):
    """The demo experiment with its shards and run directory under `out_dir` (any folder name, spaces and all)."""
    from .config import load_config, override

    return load_config(DEMO_CONFIG, overrides=[override("data.shards", str(out_dir / "shards")),
                                               override("output.run_dir", str(out_dir / "run")), *overrides])


def demo_shards(source: Path, out: Path, size: int, *, fmt: str = DEFAULT_FORMAT, folds: int = 5,
                shard_samples: int = 48, overwrite: bool = False, progress: bool = True, **data_options: Any):
    """Make the synthetic demo data under `source` (once) and convert it into `out/<size>`; return the Manifest.

    Both steps resume: test.csv is the demo data's last file, and `convert` keeps complete shards.
    """
    from .shards.convert import convert
    from .shards.demo_data import DemoPaths, make_demo_data

    if (source / "test.csv").exists():
        paths = DemoPaths(images=source / "images", train_csv=source / "train.csv", test_csv=source / "test.csv")
    else:
        paths = make_demo_data(source, overwrite=True, **data_options)  # its own folder, left by a killed run
    return convert(paths.images, paths.train_csv, out, fmt=fmt, sizes=(size,), folds=folds, test_csv=paths.test_csv,
                   shard_samples=shard_samples, overwrite=overwrite, progress=progress)[size]


def step(n: int, text: str) -> None:
    """Print a numbered step header."""
    print(f"\n== [{n}/3] {text}", flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="run the whole job on built-in synthetic data (what `make demo` runs)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo", help="folder for the demo data, shards and run (default: demo)")
    p.add_argument("--format", dest="fmt", choices=list(FORMATS), default=DEFAULT_FORMAT,
                   help=f"shard format (default: {DEFAULT_FORMAT})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value of the demo config, e.g. --set train.epochs=1 (repeatable)")
    p.set_defaults(func=lambda a: run_demo(a.out, a.fmt, a.overrides) and 0)
