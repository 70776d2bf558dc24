"""Benchmark: the kit's K-fold CV per task kind on real images, beside a simple reference model on the same folds.

The images are scikit-learn's `load_digits`: 1,797 real 8×8 scans of handwritten digits that ship with the package (no
download), upscaled bicubically to --size px JPEGs. The last --test of them are the test CSV (so `kitpkg cv` writes a
submission), the others the train CSV, which holds every kind's label column(s), made from the digit d or the scan:
  kind        column(s)               value                                                         metric (extra)
  binary      big                     d >= 5 (half the digits)                                      auc (pauc)
  multiclass  digit                   d, 10 classes                                                 accuracy (logloss)
  multilabel  even, big, prime, loop  0/1 each: d even; d >= 5; d in 2, 3, 5, 7; d in 0, 6, 8, 9    mean_auc
  regression  slant                   the stroke's shear, from the scan (below)                     rmse
  ordinal     grade                   d as ordered grades 0..9                                      qwk
  soft        p0..p9                  a distribution over the 10 digits (below)                     kl
slant: cov(x, y) / var(y) of the ink-weighted pixel grid of the 8×8 scan (what MNIST deskewing removes), in px
sideways per px upwards, > 0 leaning right: a measured real-valued property of each real image, not a relabelling of
its class. It is nearly linear in the pixels, so the linear reference is a strong bar for it.
soft: a construction on the real images: 0.7 on the true digit and 0.3 spread over the ten digits by how alike the
scan is to each digit's mean scan (softmax of minus the squared distance), so a 7 that looks like a 1 gives 1 more.
loop: the digits usually written with a closed loop (4, written open or closed, is left out).

Per kind: `kitpkg convert` (its own shard set, kit-assigned folds), `kitpkg init --from demo`, and `kitpkg cv` with a
small timm model (--model) trained from scratch (model.pretrained false; no flips, as digits have a left and an up; no
TTA) and the kind's default metric. The reference is fitted on the 64 raw pixels of the 8×8 scans, on the folds the
kit's manifest assigned: LogisticRegression (binary; multiclass; multilabel: one per label; ordinal: its most likely
grade; soft: fitted to the target distribution as sample weights), Ridge (regression). Both are scored by
kitpkg.metrics.

    nice -n 10 .venv/bin/python benchmarks/tasks.py                      # every kind: minutes (2 cores, shared: ~9)
    nice -n 10 .venv/bin/python benchmarks/tasks.py --kinds binary,soft  # some kinds (re-run as kinds land)

Columns: task; metric (↑ higher is better, ↓ lower); kit CV: the metric per fold of the kit's OOF predictions, mean ±
sd over folds | pooled over all OOF rows; reference: the same for the reference model; kit s: wall seconds of
`kitpkg cv` (on a shared machine mostly the others' load); ref s: the reference's fits and predictions. A kind the kit
cannot train (yet) shows "not available yet:" and the kit's one-line error instead of its scores. The kit's output per
kind is in WORK/<kind>/cv.log.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KITPKG = [sys.executable, "-m", "kitpkg"]
KINDS = ("binary", "multiclass", "multilabel", "regression", "ordinal", "soft")
MULTILABELS = {"even": (0, 2, 4, 6, 8), "big": (5, 6, 7, 8, 9), "prime": (2, 3, 5, 7), "loop": (0, 6, 8, 9)}
COLUMNS = {"binary": ["big"], "multiclass": ["digit"], "multilabel": list(MULTILABELS), "regression": ["slant"],
           "ordinal": ["grade"], "soft": [f"p{c}" for c in range(10)]}
EXTRA_METRICS = {"binary": ["pauc"], "multiclass": ["logloss"]}
SOFT_TRUE_SHARE = 0.7  # the rest is spread by likeness to each digit's mean image


def load_digit_scans():
    """(images N×8×8 in [0, 1], digits N) of scikit-learn's digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("benchmarks/tasks.py needs scikit-learn (its digits are the data): pip install scikit-learn")
    data = load_digits()
    return data.images / 16.0, data.target.astype(int)


def slant(images: np.ndarray) -> np.ndarray:
    """Shear of each image's ink: cov(x, y) / var(y) of the ink-weighted pixel grid, > 0 leaning right."""
    rows, cols = np.mgrid[0:images.shape[1], 0:images.shape[2]]
    ink = images / images.sum(axis=(1, 2), keepdims=True)
    dy = rows[None] - (ink * rows).sum(axis=(1, 2), keepdims=True)
    dx = cols[None] - (ink * cols).sum(axis=(1, 2), keepdims=True)
    return -(ink * dx * dy).sum(axis=(1, 2)) / (ink * dy * dy).sum(axis=(1, 2))  # rows grow downwards: flip the sign


def soft_targets(images: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """N×10 target distributions: SOFT_TRUE_SHARE on the digit, the rest by likeness to each digit's mean image."""
    flat = images.reshape(len(images), -1)
    means = np.stack([flat[digits == c].mean(0) for c in range(10)])
    dist = ((flat[:, None, :] - means[None]) ** 2).sum(-1)
    like = np.exp(-(dist - dist.min(1, keepdims=True)))
    like /= like.sum(1, keepdims=True)
    probs = np.round(SOFT_TRUE_SHARE * np.eye(10)[digits] + (1 - SOFT_TRUE_SHARE) * like, 6)
    probs[np.arange(len(probs)), probs.argmax(1)] += 1 - probs.sum(1)  # rows sum to 1 after rounding
    return probs


def label_frame(images: np.ndarray, digits: np.ndarray) -> pd.DataFrame:
    """Every kind's label columns (COLUMNS) of each image, as the module docstring defines them."""
    frame = pd.DataFrame({"big": (digits >= 5).astype(int), "digit": digits})
    for name, members in MULTILABELS.items():
        frame[name] = np.isin(digits, members).astype(int)
    frame["slant"] = np.round(slant(images), 6)
    frame["grade"] = digits
    frame[COLUMNS["soft"]] = soft_targets(images, digits)
    return frame


def write_data(work: Path, images: np.ndarray, labels: pd.DataFrame, n_test: int, size: int) -> None:
    """JPEGs (size px, upscaled bicubically) under WORK/images, WORK/train.csv and WORK/test.csv."""
    from PIL import Image

    (work / "images").mkdir(parents=True, exist_ok=True)
    ids = list(labels.index)
    for name, image in zip(ids, images):
        pixels = Image.fromarray((image * 255).round().astype(np.uint8)).resize((size, size), Image.BICUBIC)
        pixels.convert("RGB").save(work / "images" / f"{name}.jpg", quality=95)
    frame = labels.rename_axis("image_name").reset_index()
    frame.iloc[:len(frame) - n_test].to_csv(work / "train.csv", index=False)
    frame.iloc[len(frame) - n_test:][["image_name"]].to_csv(work / "test.csv", index=False)


def run_kit(args: List[str], log: Path) -> Tuple[Optional[str], float]:
    """Run `kitpkg ARGS` (output appended to `log`): (None or its one-line error, wall seconds)."""
    print("  $ kitpkg " + shlex.join(args), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        done = subprocess.run(KITPKG + args, stdout=out, stderr=subprocess.PIPE, text=True, cwd=log.parent)
        out.write(done.stderr)
    wall = time.perf_counter() - start
    if done.returncode == 0:
        return None, wall
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    kit_lines = [line for line in lines if line.startswith("kitpkg ")]  # a KitError's one line
    return (kit_lines or lines or [f"exit status {done.returncode}"])[-1], wall


def kit_cv(kind: str, work: Path, opts: argparse.Namespace) -> Tuple[Optional[str], float]:
    """Convert the kind's shard set, write its config and run `kitpkg cv`: (None or the error, cv wall seconds)."""
    folder = work / kind
    shutil.rmtree(folder / "run", ignore_errors=True)  # a fresh CV each time (a re-run would resume the folds)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "cv.log"
    log.write_text("")
    error, _ = run_kit(["convert", str(work / "images"), str(work / "train.csv"), "shards", "--size", str(opts.size),
                        "--label-col", ",".join(COLUMNS[kind]), "--group-col", "", "--folds", str(opts.folds),
                        "--test-csv", str(work / "test.csv"), "--no-progress", "--overwrite"], log)
    if error is None and not (folder / "exp.yaml").exists():
        error, _ = run_kit(["init", "exp", "--from", "demo", "--dir", "."], log)
    if error is not None:
        return error, 0.0
    settings = {"model.name": opts.model, "model.pretrained": "false", "train.task": kind, "train.loss": "auto",
                "train.epochs": opts.epochs, "train.accelerator": opts.device, "data.image_size": opts.size,
                "data.batch_size": 64, "data.num_workers": opts.workers, "data.aug.hflip": "false",
                "data.aug.vflip": "false", "data.aug.transpose": "false", "predict.tta": "[]",
                "train.checkpoint_every_n_steps": 1000}
    overrides = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return run_kit(["cv", "--config", "exp.yaml", "--run-dir", "run", *overrides], log)


def kit_oof(run_dir: Path) -> pd.DataFrame:
    """The kit's OOF predictions as canonical arrays (kitpkg.predictions), one row per id: columns fold, pred."""
    from kitpkg.predictions import read_predictions
    from kitpkg.rundir import RunDir
    from kitpkg.tables import read_csv
    from kitpkg.train.runstate import RunState

    read = read_predictions(read_csv(RunDir(run_dir).oof), RunState.read(run_dir).task)
    return pd.DataFrame({"fold": read.fold, "pred": list(read.pred)}, index=pd.Index(read.ids, name="id"))


def manifest_folds(kind: str, work: Path, size: int) -> pd.Series:
    """{id: fold} the kit's convert assigned to the kind's train images."""
    from kitpkg.shards.manifest import load_manifest

    return pd.Series(load_manifest(str(work / kind / "shards" / str(size))).fold_of())


def reference_oof(kind: str, pixels: np.ndarray, target: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """OOF predictions (the kind's canonical array) of the reference model fitted on the other folds' pixels."""
    parts = {}
    for k in np.unique(folds):
        parts[k] = _reference_fit_predict(kind, pixels[folds != k], target[folds != k], pixels[folds == k])
    out = np.zeros((len(folds), *parts[k].shape[1:]))
    for k, pred in parts.items():
        out[folds == k] = pred
    return out


def _reference_fit_predict(kind: str, x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression, Ridge

    def logreg():
        return LogisticRegression(max_iter=2000)

    if kind == "regression":
        return Ridge(alpha=1.0).fit(x, y).predict(x_new)
    if kind == "binary":
        return logreg().fit(x, y).predict_proba(x_new)[:, 1]
    if kind == "multiclass":
        return logreg().fit(x, y).predict_proba(x_new)
    if kind == "ordinal":
        return logreg().fit(x, y).predict(x_new).astype(np.float64)  # its most likely grade, on the index scale
    if kind == "multilabel":
        return np.stack([logreg().fit(x, y[:, j]).predict_proba(x_new)[:, 1] for j in range(y.shape[1])], 1)
    # soft: each image once per class, weighted by the target's share (cross-entropy to the distribution)
    classes = np.tile(np.arange(y.shape[1]), len(x))
    model = logreg().fit(np.repeat(x, y.shape[1], axis=0), classes, sample_weight=y.ravel())
    return model.predict_proba(x_new)


def fold_scores(metric, target: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> str:
    """'mean ± sd | pooled' of a kitpkg metric over folds (sd over folds, as the kit's CV line) and over all rows."""
    per_fold = [metric.compute(target[folds == k], pred[folds == k]) for k in np.unique(folds)]
    return f"{np.mean(per_fold):.4f} ± {np.std(per_fold):.4f} | {metric.compute(target, pred):.4f}"


def canonical_target(values: pd.DataFrame) -> np.ndarray:
    """(N,) for one label column, else (N, K): the canonical target arrays of kitpkg.metrics."""
    array = values.to_numpy(copy=True)  # writable: kitpkg.metrics makes tensors of it
    return array[:, 0] if array.shape[1] == 1 else array


def kit_predictions(kind: str, work: Path, opts: argparse.Namespace) -> Tuple[Optional[str], float, Optional[pd.Series],
                                                                               Optional[pd.DataFrame]]:
    """(error or None, cv wall seconds, the manifest's folds, the kit's OOF) of one kind; nothing raised."""
    error, wall = kit_cv(kind, work, opts)
    try:
        folds = manifest_folds(kind, work, opts.size)
    except Exception as err:  # no shard set: the convert error says why
        return error or f"{type(err).__name__}: {err}", wall, None, None
    if error:
        return error, wall, folds, None
    try:
        oof = kit_oof(work / kind / "run")
    except Exception as err:  # the kind trained, but its OOF file or reader is not there yet
        return f"reading the OOF: {type(err).__name__}: {err}", wall, folds, None
    if not oof["fold"].equals(folds.loc[oof.index]):
        return "the OOF's folds differ from the manifest's", wall, folds, None
    return None, wall, folds, oof


def benchmark_kind(kind: str, work: Path, pixels: pd.DataFrame, labels: pd.DataFrame,
                   opts: argparse.Namespace) -> List[List[str]]:
    """Table rows of one kind, one per metric (the kind's default first): kit CV, reference CV, wall times."""
    from kitpkg.metrics import default_metric, metric_from_spec

    print(f"{kind}:", file=sys.stderr, flush=True)
    error, kit_wall, folds, oof = kit_predictions(kind, work, opts)
    ref_pred, ref_wall = None, 0.0
    if folds is not None:
        start = time.perf_counter()
        ref_pred = reference_oof(kind, pixels.loc[folds.index].to_numpy(),
                                 canonical_target(labels.loc[folds.index, COLUMNS[kind]]), folds.to_numpy())
        ref_wall = time.perf_counter() - start
    rows = []
    for name in [default_metric(kind), *EXTRA_METRICS.get(kind, [])]:
        metric = metric_from_spec(name, ".", kind, num_classes=10 if kind == "ordinal" else None)  # 10 grades
        kit = ref = "—"
        if oof is not None:
            kit = fold_scores(metric, canonical_target(labels.loc[oof.index, COLUMNS[kind]]),
                              np.stack(oof["pred"].to_numpy()), oof["fold"].to_numpy())
        if ref_pred is not None:
            ref = fold_scores(metric, canonical_target(labels.loc[folds.index, COLUMNS[kind]]), ref_pred,
                              folds.to_numpy())
        rows.append([kind, f"{name} {'↑' if metric.higher_is_better else '↓'}",
                     f"not available yet: {error}" if error else kit, ref,
                     "—" if error else f"{kit_wall:.0f}", f"{ref_wall:.2f}"])
    return rows


def print_table(rows: List[List[str]]) -> None:
    """The rows under a header, columns padded to their widest cell."""
    rows = [["task", "metric", "kit CV (mean ± sd | pooled OOF)", "reference CV", "kit s", "ref s"], *rows]
    failed = "not available yet"  # a kit error is one long cell: the columns after it are not widened for it
    widths = [max(len(row[j]) for row in rows if j != 2 or not row[2].startswith(failed)) for j in range(6)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated task kinds to run")
    p.add_argument("--work", default=None, help="folder for images, shards and runs (default: a temporary one)")
    p.add_argument("--n", type=int, default=1797, help="digits used (the first N of 1,797)")
    p.add_argument("--test", type=int, default=297, help="of those, the last this many are the test CSV")
    p.add_argument("--size", type=int, default=32, help="side of the JPEGs and shards in px")
    p.add_argument("--folds", type=int, default=5, help="CV folds")
    p.add_argument("--model", default="test_resnet", help="timm model name (trained from scratch)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="data.num_workers")
    p.add_argument("--device", default="cpu", help="train.accelerator: cpu, gpu or auto")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Write the data, run every asked kind, print the table."""
    opts = parse_args(argv)
    kinds = [k.strip() for k in opts.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        sys.exit(f"--kinds: unknown {', '.join(unknown)}; use some of {', '.join(KINDS)}")
    work = Path(opts.work) if opts.work else Path(tempfile.mkdtemp(prefix="kitpkg-tasks-"))
    images, digits = load_digit_scans()
    images, digits = images[:opts.n], digits[:opts.n]
    labels = label_frame(images, digits)
    labels.index = pd.Index([f"digit{i:04d}" for i in range(len(images))], name="id")
    pixels = pd.DataFrame(images.reshape(len(images), -1), index=labels.index)
    write_data(work, images, labels, opts.test, opts.size)
    rows = []
    for kind in kinds:
        rows += benchmark_kind(kind, work, pixels, labels, opts)
    print(f"{len(images) - opts.test} train / {opts.test} test digits at {opts.size} px, {opts.folds} folds, "
          f"{opts.model} from scratch, epochs: {opts.epochs}, on {opts.device}; work folder {work}")
    print_table(rows)


if __name__ == "__main__":
    main()
