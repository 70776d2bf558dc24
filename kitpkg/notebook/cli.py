"""CLI subcommands of kitpkg.notebook (argument parsing only; the work is one call into the library)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `kitpkg` parser."""
