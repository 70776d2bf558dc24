"""The kit's CSV files (OOF, test predictions, part files, submissions): written atomically at full float precision,
read back with ids as strings, and the s0..s{C-1} score (and target) columns of scores frames. Training and experiments
share it."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pandas as pd

from .fsutil import atomic_write_text


def score_columns(num_classes: int) -> List[str]:
    """Score columns of part files: s0..s{C-1}."""
    return [f"s{c}" for c in range(num_classes)]


def target_score_columns(count: int) -> List[str]:
    """Target columns of part files: target (one label column) or target0..target{K-1} (several)."""
    return ["target"] if count == 1 else [f"target{j}" for j in range(count)]


def target_cols(frame: pd.DataFrame) -> List[str]:
    """The target columns of a scores frame (see target_score_columns)."""
    return [c for c in frame.columns if c == "target" or (c.startswith("target") and c[6:].isdigit())]


def score_cols(frame: pd.DataFrame) -> List[str]:
    """The s0..s{C-1} columns of a scores frame (see score_columns)."""
    return [c for c in frame.columns if c.startswith("s") and c[1:].isdigit()]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically with full float precision (so OOF comparisons to 1e-6 are meaningful)."""
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.9g"))


def read_csv(path: Path) -> pd.DataFrame:
    """Read a kitpkg CSV with ids kept as strings."""
    return pd.read_csv(path, dtype={"id": str})
