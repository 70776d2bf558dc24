"""Tiny shard sets for each task kind whose label is drawn in the image's colour, so a tiny model learns it in a few
steps (tests/test_task_kinds.py): the rows, the label columns, the competition's layout of a sample submission and a
chance baseline of the kind's metric, all computed here from the generated labels, never read from the kit.

The signal per kind (32 px JPEGs, each pixel jittered by noise so no two images are alike):
  binary      one 0/1 column `target`: positives red, negatives blue
  multiclass  one text column `colour` of 3 classes: the image is that colour
  multilabel  three 0/1 columns: label j on -> colour channel j bright, else dark
  regression  one fractional float column `size`: the grey level grows with it
  ordinal     one integer column `grade` 0..3: the grey level grows with it
  soft        three columns that sum to 1 per row (one class holds 0.6-0.9): each channel's brightness is its
              share
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

SIDE = 32
COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 50, 40)}  # multiclass classes (text)
LABEL_COLUMNS = {"binary": ["target"], "multiclass": ["colour"], "multilabel": ["cat", "dog", "bird"],
                 "regression": ["size"], "ordinal": ["grade"], "soft": ["p_a", "p_b", "p_c"]}
ID = "image_name"


@dataclass
class KindData:
    """A kind's generated training set: its rows (id -> label values as written to the CSV), label columns, test ids
    in the test CSV's order, and its manifest."""

    kind: str
    rows: List[Dict[str, object]]
    labels: List[str]
    test_ids: List[str]
    manifest: object

    def truth(self) -> Dict[str, List[float]]:
        """id -> the label value(s) as numbers (multiclass: the class's index in sorted class order)."""
        classes = sorted(COLOURS)
        return {str(r[ID]): [classes.index(r[c]) if self.kind == "multiclass" else float(r[c]) for c in self.labels]
                for r in self.rows}


def _labels(kind: str, rng: np.random.Generator, n: int) -> List[Dict[str, object]]:
    """n rows of the kind's label column(s), balanced where the kind has classes."""
    if kind == "binary":
        return [{"target": i % 2} for i in rng.permutation(n)]
    if kind == "multiclass":
        names = sorted(COLOURS)
        return [{"colour": names[i % len(names)]} for i in rng.permutation(n)]
    if kind == "multilabel":
        return [{c: int(rng.uniform() < 0.5) for c in LABEL_COLUMNS[kind]} for _ in range(n)]
    if kind == "regression":
        return [{"size": round(round(float(rng.uniform(0, 10)), 3) + 0.0005, 4)} for _ in range(n)]  # never whole
    if kind == "ordinal":
        return [{"grade": i % 4} for i in rng.permutation(n)]
    if kind == "soft":  # as experts' votes: one class holds most of each row, the others share the rest
        rows = []
        for major in rng.permutation(n) % 3:
            p = np.zeros(3)
            p[major] = rng.uniform(0.6, 0.9)
            first, second = (major + 1) % 3, (major + 2) % 3
            p[first] = np.floor((1 - p[major]) * rng.uniform() * 1000) / 1000
            p[major] = np.floor(p[major] * 1000) / 1000
            p[second] = round(1.0 - p.sum(), 3)  # the written row sums to 1 (to the CSV's 3 decimals)
            rows.append(dict(zip(LABEL_COLUMNS[kind], (float(v) for v in p))))
        return rows
    raise ValueError(f"unknown kind {kind!r}")


def _colour(kind: str, row: Dict[str, object]) -> np.ndarray:
    """The RGB colour an image of this row is drawn in (the learnable signal)."""
    if kind == "binary":
        return np.array((220, 50, 40) if row["target"] else (40, 60, 220), dtype=np.float64)
    if kind == "multiclass":
        return np.array(COLOURS[row["colour"]], dtype=np.float64)
    if kind == "multilabel":
        return np.array([220 if row[c] else 35 for c in LABEL_COLUMNS[kind]], dtype=np.float64)
    if kind == "regression":
        return np.full(3, 20 + 21.5 * float(row["size"]))
    if kind == "ordinal":
        return np.full(3, 30 + 65 * int(row["grade"]))
    return np.array([30 + 200 * float(row[c]) for c in LABEL_COLUMNS[kind]], dtype=np.float64)


def _image(kind: str, row: Dict[str, object], rng: np.random.Generator) -> bytes:
    import simplejpeg

    pixels = _colour(kind, row)[None, None, :] + rng.normal(0, 18, (SIDE, SIDE, 3))
    return simplejpeg.encode_jpeg(np.clip(pixels, 0, 255).astype(np.uint8), quality=90)


def make_kind_data(folder: Path, kind: str, n: int = 48, n_test: int = 8, folds: int = 2, seed: int = 0
                   ) -> KindData:
    """Images, train.csv (ids + the kind's label columns) and test.csv of `kind` in `folder`, converted into
    `folder`/shards (TFRecord, 32 px, `folds` folds, a test split) with kitpkg.shards.convert.convert."""
    from kitpkg.shards.convert import convert

    rng = np.random.default_rng(seed)
    rows = [{ID: f"{kind}{i:03d}", **labels} for i, labels in enumerate(_labels(kind, rng, n))]
    test_rows = [{ID: f"tst{i:03d}", **labels} for i, labels in enumerate(_labels(kind, rng, n_test))]
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for row in [*rows, *test_rows]:
        (images / f"{row[ID]}.jpg").write_bytes(_image(kind, row, rng))
    labels = LABEL_COLUMNS[kind]
    train_csv = _write_csv(folder / "train.csv", rows, [ID, *labels])
    test_csv = _write_csv(folder / "test.csv", test_rows, [ID])  # the test CSV has no labels
    manifest = convert(images, train_csv, folder / "shards", sizes=(SIDE,), folds=folds, label_col=",".join(labels),
                       group_col=None, shard_samples=16, workers=1, progress=False, test_csv=test_csv)[SIDE]
    return KindData(kind, rows, labels, [str(r[ID]) for r in test_rows], manifest)


def _write_csv(path: Path, rows: Sequence[Dict[str, object]], columns: Sequence[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def sample_submission(path: Path, kind: str, test_ids: Sequence[str], seed: int = 1) -> Path:
    """A competition-style sample submission for `kind` over `test_ids`, its rows shuffled and its class columns in
    another order than the classes' (so a file in the kit's own order cannot pass): binary ISIC's `target`;
    multiclass one column per class (named as the classes); multilabel Planet's space-separated `tags`; regression
    and ordinal one column named as the label; soft one column per class. The placeholder values are what Kaggle's
    samples hold (a constant)."""
    order = np.random.default_rng(seed).permutation(len(test_ids))
    ids = [test_ids[i] for i in order]
    if kind == "multiclass":
        columns = {c: 1.0 / len(COLOURS) for c in ("red", "blue", "green")}
    elif kind == "multilabel":
        columns = {"tags": "cat dog"}
    elif kind == "soft":
        columns = {c: 1.0 / 3 for c in ("p_c", "p_a", "p_b")}
    else:
        columns = {LABEL_COLUMNS[kind][0] if kind in ("regression", "ordinal") else "target": 0}
    rows = [{ID: i, **columns} for i in ids]
    return _write_csv(path, rows, [ID, *columns])
