"""The `kitpkg` command: argument parsing only; every subcommand is one call into the library.

Each area registers its own subcommands (`kitpkg/<area>/cli.py: register(subparsers)`); those modules import nothing
heavy at module level so `kitpkg --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ._version import __version__
from .errors import KitError


def _areas():
    from . import demo, starter
    from .experiments import cli as experiments_cli
    from .notebook import cli as notebook_cli
    from .shards import cli as shards_cli
    from .train import cli as train_cli

    return [starter, shards_cli, train_cli, experiments_cli, notebook_cli, demo]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="kitpkg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kitpkg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in _areas():
        area.register(sub)
    parser.set_defaults(prepare_run=_continue_attached_run)  # `kitpkg cv` / `kitpkg train` call it first
    return parser


def _continue_attached_run(config, run_dir: Optional[str]) -> None:
    """A run attached as Kaggle input continues in the run directory (no-op elsewhere); handed to the training
    commands from here, the top, so that train/ does not import the notebook area above it."""
    from .notebook.restore import restore_on_kaggle

    restore_on_kaggle(config, run_dir)


def _os_error_line(err: OSError) -> str:
    """One line for an OS error: the file it names, what the OS said, and what to check."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err} (check the path and its permissions, then re-run)"


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KitError, FileNotFoundError) as err:
        print(f"kitpkg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permission denied, read-only filesystem …: the OS names the file; no traceback for it
        print(f"kitpkg {args.command}: error: {_os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kitpkg {args.command}: interrupted; re-run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
