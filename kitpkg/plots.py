"""Figures: matplotlib on the Agg backend (no display needed), saved as PNGs that appear under their final name only
when complete. The run report and the experiments' plots share it."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> str:
    """Save `fig` as `path` (a PNG appearing under its final name only when complete), close it; return the name."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)  # appears under its final name only when complete
    pyplot().close(fig)
    return path.name
