"""The run report: report.md + PNGs (per-fold scores, training curves, LR-finder curve, and the plot the task's
predictions mean something in: ROC per fold for a binary score (binary, train.score_class), a confusion matrix for
classes (multiclass, ordinal, soft: its argmax), predicted against true values for a regression) from run files.

Everything is read back from the run directory (state.json, oof.csv, fold*/metrics.csv, lr_find.json), so the report
can be rebuilt at any time with `write_report(run_dir)`. Figures are drawn and saved by kitpkg/plots.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from ..fsutil import atomic_write_text
from ..metrics import auc, label_decisions, metric_keys, roc_curve
from ..plots import pyplot, save_figure
from ..predictions import Predictions, read_predictions
from ..rundir import RunDir
from ..tables import read_csv
from ..task import Task


def fold_score(oof: pd.DataFrame, task: Task) -> float:
    """The CV metric of OOF rows: the task's registry metric (NaN when they cannot be scored: an AUC of one class)."""
    return read_predictions(oof, task).score(task)


def epoch_score(metrics_csv: Path, key: str, epoch: Optional[int] = None) -> Optional[float]:
    """`key` (val_auc / val_acc) of a fold's metrics.csv at `epoch`, by default the last validation: the score as
    monitored during the fit (EMA weights when on, no TTA); None when absent or NaN. The last epoch's is what the fold
    would score without picking its best epoch on itself."""
    try:
        history = pd.read_csv(metrics_csv)
    except (OSError, pd.errors.EmptyDataError):
        return None
    if key not in history or history.empty:
        return None
    rows = history.sort_values("epoch") if epoch is None else history[history["epoch"] == epoch]
    value = float(rows[key].iloc[-1]) if len(rows) else float("nan")
    return value if value == value else None


def plot_roc(oof: Predictions, path: Path) -> str:
    """ROC curve of every fold and of the pooled OOF (rows scored as binary: target 0/1, pred a probability)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for k in sorted(np.unique(oof.fold)):
        target, pred = oof.target[oof.fold == k], oof.pred[oof.fold == k]
        if len(np.unique(target)) < 2:
            continue  # one class: no ROC curve (the fold has no AUC)
        fpr, tpr = roc_curve(target, pred)
        ax.plot(fpr, tpr, lw=1, label=f"fold {k} (AUC {auc(target, pred):.3f})")
    if len(np.unique(oof.target)) > 1:
        fpr, tpr = roc_curve(oof.target, oof.pred)
        ax.plot(fpr, tpr, lw=2, color="black", label=f"OOF (AUC {auc(oof.target, oof.pred):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC per fold")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_confusion(oof: Predictions, task: Task, path: Path) -> str:
    """The confusion matrix of the pooled OOF rows: counts of each true class (rows) decided as each class (columns;
    argmax, or an ordinal value cut at k - 0.5), the class names on the axes when the task has them."""
    target, decided = label_decisions(task.kind, oof.target, oof.pred, None, task.num_classes)
    n = max(task.num_classes, int(max(target.max(initial=0), decided.max(initial=0))) + 1)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (target, decided), 1)
    names = list(task.classes) if task.classes and len(task.classes) == n else [str(c) for c in range(n)]
    plt = pyplot()
    size = min(4 + 0.4 * n, 12)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    for (i, j), count in np.ndenumerate(counts):
        if n <= 20:  # a number per cell while they stay readable
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > counts.max() / 2 else "black")
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class", title="OOF confusion matrix")
    return save_figure(fig, path)


def plot_predicted_vs_true(oof: Predictions, labels: List[str], path: Path) -> str:
    """Predicted against true values of the pooled OOF rows, one panel per target column, the diagonal dashed."""
    target, pred = oof.target.reshape(len(oof.target), -1), oof.pred.reshape(len(oof.pred), -1)
    columns = target.shape[1]
    plt = pyplot()
    fig, axes = plt.subplots(1, columns, figsize=(4 * min(columns, 4), 4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        ax.scatter(target[:, j], pred[:, j], s=6, alpha=0.5)
        low, high = float(min(target[:, j].min(), pred[:, j].min())), float(max(target[:, j].max(),
                                                                                 pred[:, j].max()))
        ax.plot([low, high], [low, high], ls="--", color="grey", lw=0.8)
        name = labels[j] if j < len(labels) else f"target {j}"
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title="OOF predicted vs true")
    return save_figure(fig, path)


def plot_curves(histories: Dict[int, pd.DataFrame], path: Path, key: Optional[str] = None) -> str:
    """Train/val loss and the val metric per epoch for every fold."""
    return save_figure(curves_figure(histories, key), path)


def curves_figure(histories: Dict[int, pd.DataFrame], key: Optional[str] = None):
    """The figure of `plot_curves`: whole epochs on the x-axes (a 2-epoch run has no "0.5" tick); `key`: the
    validation metric's column (the task's; None: the first built-in metric's key found, kitpkg/metrics.py)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (k, h) in enumerate(sorted(histories.items())):
        color = f"C{i % 10}"  # one colour per fold: train dashed, val solid
        if "train_loss" in h:
            ax_loss.plot(h["epoch"], h["train_loss"], ls="--", color=color, label=f"fold {k} train")
        if "val_loss" in h:
            ax_loss.plot(h["epoch"], h["val_loss"], color=color, label=f"fold {k} val")
        metric = key if key in h else next((m for m in metric_keys() if m in h), None)
        if metric:
            ax_metric.plot(h["epoch"], h[metric], marker="o", color=color, label=f"fold {k}")
            ax_metric.set_ylabel(metric)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_metric.set(xlabel="epoch", title="validation metric")
    for ax in (ax_loss, ax_metric):
        ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def plot_scores(scores: Dict[int, float], metric: str, path: Path) -> str:
    """Bar chart of the per-fold scores with the mean."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    folds = sorted(scores)
    ax.bar([str(k) for k in folds], [scores[k] for k in folds], color="tab:blue")
    ax.axhline(float(np.mean(list(scores.values()))), color="black", ls="--", lw=1, label="mean")
    ax.set(xlabel="fold", ylabel=metric, title="score per fold")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _cell(value: Optional[float], missing: str) -> str:
    return missing if value is None else f"{value:.4f}"


def plot_lr_find(result: Dict, path: Path) -> str:
    """Loss against learning rate from `kitpkg lr-find`, with the suggestion marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(result["lr"], result["loss"])
    ax.set_xscale("log")
    if result.get("suggestion"):
        ax.axvline(result["suggestion"], color="red", ls="--", label=f"suggestion {result['suggestion']:.2e}")
        ax.legend(fontsize=8)
    ax.set(xlabel="learning rate", ylabel="loss", title=result.get("title", "LR finder"))
    return save_figure(fig, path)


def _histories(run_dir: Path) -> Dict[int, pd.DataFrame]:
    return {k: pd.read_csv(path) for k, path in RunDir(run_dir).histories().items()}


def _prediction_plots(oof: Predictions, task: Task, files: RunDir) -> List[str]:
    """The report's section of the plot the task's OOF predictions mean something in (none for multilabel)."""
    if task.scored_binary:
        if len(np.unique(oof.target)) > 1:  # else no fold has a curve
            return ["## ROC", "", f"![ROC per fold]({plot_roc(oof, files.figure('roc'))})", ""]
        return []
    if task.kind in ("multiclass", "ordinal", "soft"):
        path = plot_confusion(oof, task, files.figure("confusion"))
        return ["## Confusion matrix", "", f"![confusion matrix]({path})", ""]
    if task.kind == "regression":
        path = plot_predicted_vs_true(oof, list(task.labels), files.figure("predicted_vs_true"))
        return ["## Predicted vs true", "", f"![predicted vs true]({path})", ""]
    return []


def write_report(run_dir: Path, pending: Sequence[int] = ()) -> Path:
    """Write report.md and its PNGs into the run directory; return the report path. `pending`: folds still to run
    (a run paused at its session budget): the report says it is partial."""
    run_dir = Path(run_dir)
    from .runstate import RunState

    run = RunState.read(run_dir)
    files, task = run.paths, run.task
    folds = {k: v for k, v in run.folds().items() if v.is_done}
    metric = task.scoring.label
    lines: List[str] = [f"# CV report: {run_dir.name}", ""]
    if pending:
        lines += [f"**Partial**: paused at the session budget (train.time_limit) with folds "
                  f"{', '.join(map(str, pending))} still to run; the scores are of the finished folds only.", ""]
    config = run.config
    lines += [f"Model `{config.get('model.name')}` at {config.get('data.image_size')} px, "
              f"{config.get('train.epochs')} epochs, optimizer `{config.get('optim.name')}` lr {config.get('optim.lr')}, "
              f"config hash `{(run.config_hash or '')[:12]}`.", ""]
    scores = {k: v.score for k, v in sorted(folds.items()) if v.scored}
    left_out = [k for k in sorted(folds) if k not in scores]
    lines += ["| fold | " + metric + " | last epoch | best epoch | samples |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {_cell(v.score if v.scored else None, 'n/a (one class)')} | {_cell(v.last_score, 'n/a')} | "
              f"{v.best_epoch} | {v.samples} |" for k, v in sorted(folds.items())]
    cv = run.cv
    if scores:
        vals = np.array(list(scores.values()))
        lasts = [v.last_score for v in folds.values() if v.last_score is not None]
        lines += [f"| **mean ± std** | **{vals.mean():.4f} ± {vals.std():.4f}** | "
                  f"{f'{np.mean(lasts):.4f}' if lasts else ''} | | |", ""]
        if left_out:
            lines += [f"fold {', '.join(map(str, left_out))} left out of the mean: a validation split of one class "
                      f"has no {metric}.", ""]
        lines += ["Last epoch: each fold's validation metric at its final epoch as monitored during the fit (no TTA); "
                  "the CV score uses the best epoch, picked on the same fold.", ""]
        if cv is not None and cv.oof is not None:
            lines += [f"Pooled OOF {metric}: {cv.oof:.4f}.", ""]
        lines += [f"![per-fold scores]({plot_scores(scores, metric, files.figure('scores'))})", ""]
    if files.oof.exists():
        lines += _prediction_plots(read_predictions(read_csv(files.oof), task), task, files)
    histories = _histories(run_dir)
    if histories:
        curves = plot_curves(histories, files.figure("curves"), task.scoring.key)
        lines += ["## Training curves", "", f"![training curves]({curves})", ""]
    if files.lr_find.exists():
        result = json.loads(files.lr_find.read_text())
        lines += ["## LR finder", "", f"Suggested lr: {result.get('suggestion')}", "",
                  f"![LR finder]({plot_lr_find(result, files.figure('lr_find'))})", ""]
    outputs = [path.name for path in (files.oof, files.submission, files.test_predictions) if path.exists()]
    if outputs:
        lines += ["## Files", ""] + [f"- `{name}`" for name in outputs] + [""]
    atomic_write_text(files.report, "\n".join(lines))
    return files.report
