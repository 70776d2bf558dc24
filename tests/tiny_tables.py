"""Tiny shard sets from a table: pure-noise images (nothing to learn from the pixels) and the CSV rows given, so a
test decides which column carries the label (used by the model.meta, train.score_class and init_from tests)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

SIDE = 32


def noise_shards(folder: Path, rows: List[Dict[str, object]], label_col: str = "target", folds: int = 2,
                 sizes: Sequence[int] = (SIDE,), seed: int = 0, test_rows: Sequence[Dict[str, object]] = (),
                 group_col: Optional[str] = None):
    """Convert `rows` (each with image_name and `label_col`) and `test_rows` (a test split) with noise JPEGs into
    `folder`/shards, folds grouped by `group_col` (None: by image); {size: Manifest}."""
    import simplejpeg

    from kitpkg.shards.convert import convert

    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for row in [*rows, *test_rows]:
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        (images / f"{row['image_name']}.jpg").write_bytes(simplejpeg.encode_jpeg(pixels, quality=90))
    table, test_table = _write_csv(folder / "train.csv", rows), _write_csv(folder / "test.csv", test_rows)
    return convert(images, table, folder / "shards", sizes=tuple(sizes), folds=folds, label_col=label_col,
                   group_col=group_col, shard_samples=32, workers=1, progress=False, test_csv=test_table)


def demo_csv_with(demo_source, path: Path, columns) -> Path:
    """The demo train CSV plus the columns `columns(row)` returns for each row (a dict of text values), at `path`."""
    with open(demo_source.train_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update(columns(row))
    return _write_csv(path, rows)


def _write_csv(path: Path, rows: Sequence[Dict[str, object]]):
    if not rows:
        return None
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_config(folder: Path, shards: Path, name: str = "exp", **sections: Dict[str, object]) -> Path:
    """An experiment YAML (test_resnet, 32 px, batch 8, CPU, deterministic) with `sections` merged on top."""
    import yaml

    data = {"data": {"shards": str(shards), "image_size": SIDE, "batch_size": 8, "num_workers": 0},
            "model": {"name": "test_resnet", "pretrained": False},
            "optim": {"name": "adamw", "lr": 0.003}, "sched": {"name": "cosine"},
            "train": {"epochs": 2, "seed": 1, "deterministic": True, "checkpoint_every_n_steps": 50}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
