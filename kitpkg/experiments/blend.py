"""Blends of finished runs that share their folds, on their OOF predictions: `kitpkg blend RUN … --out DIR`.

Methods: `mean` (of probabilities), `rank` (mean of each run's ranks scaled to [0, 1]; binary only) and `fit`
(non-negative weights summing to 1 on the probabilities, fitted to improve the mean fold score of the runs' metric --
train.metric: AUC, pAUC, log loss, a user's file... in its direction -- by a deterministic coordinate search from equal
weights; binary only). The fitted blend's CV is nested: fold k is scored with weights
fitted on the other folds only, so a run of noise cannot raise it; the test predictions use weights fitted on all OOF.

Outputs in DIR: oof.csv (a run's columns; `fit`: the nested predictions), test_predictions.csv + submission.csv (a
run's ids, order and columns), blend.json (members, weights, scores) and report.md.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import KitError
from ..fsutil import atomic_write_text
from ..predictions import canonical, prediction_columns, read_predictions, score, target_columns
from ..rundir import is_run_dir
from ..task import Task
from .runs import Run, load_run, split_difference

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("fit", "mean", "rank")
BINARY_ONLY = ("fit", "rank")
MIN_STEP = 1 / 128  # finest weight change the coordinate search tries
MAX_PASSES = 200  # guard: passes over the runs per step size


@dataclass
class Member:
    """A finished run's predictions, aligned to the first run's id order."""

    run: Run
    oof: "pd.DataFrame"  # oof.csv
    test: Optional["pd.DataFrame"]  # test_predictions.csv (None without a test split)
    submission_cols: Optional[Tuple[str, str]]  # (id_col, pred_col) of its submission.csv


def load_member(path: os.PathLike) -> Member:
    """A finished run: its oof.csv, and its test predictions and submission columns when it has a test split."""
    import pandas as pd

    run = load_run(path)
    oof_path = run.state.paths.oof
    if not oof_path.exists():
        raise KitError(f"{run.path}: no oof.csv (folds done {sorted(run.done)}); finish the run with "
                       f"`kitpkg cv` before blending it")
    test_path, sub_path = run.state.paths.test_predictions, run.state.paths.submission
    test = checked(run, test_path) if test_path.exists() else None
    cols = tuple(pd.read_csv(sub_path, nrows=0).columns[:2]) if sub_path.exists() else None
    return Member(run, checked(run, oof_path), test, cols)


def checked(run: Run, path: Path) -> "pd.DataFrame":
    """A run's oof.csv or test_predictions.csv, refused (naming run, file and count) when a probability is NaN,
    infinite or outside [0, 1]: a broken run would otherwise take a weight, and its NaN the submission."""
    from ..tables import read_csv
    from ..train.foldcheck import values_problem

    frame = read_csv(path)
    task = run.task.scored()
    problem = values_problem(frame, prediction_columns(task), probabilities=task.probabilities)
    if problem:
        raise KitError(f"{run.path}: {path.name}: {problem}; leave the run out of the blend, or re-run it")
    return frame


def check_members(members: Sequence[Member]) -> None:
    """Refuse runs that are not the same task on the same split and the same test ids, naming what differs."""
    first = members[0]
    for m in members[1:]:
        pair = f"{first.run.path} and {m.run.path}"
        if (m.run.task.kind, m.run.task.outputs) != (first.run.task.kind, first.run.task.outputs):
            raise KitError(f"{pair}: other tasks ({first.run.task.describe()} vs {m.run.task.describe()}); "
                           f"blend runs of one task")
        diff = split_difference(dict(zip(first.oof["id"], first.oof["fold"])), dict(zip(m.oof["id"], m.oof["fold"])))
        if diff:
            raise KitError(f"{pair}: different folds ({diff}); blend only runs on the same fold split")
        aligned = m.oof.set_index("id").loc[first.oof["id"]]
        if not np.allclose(aligned["target"].to_numpy(float), first.oof["target"].to_numpy(float)):
            raise KitError(f"{pair}: the OOF targets differ; blend only runs on the same labels")
        if (first.test is None) != (m.test is None):
            raise KitError(f"{pair}: only one has test predictions (test_predictions.csv); run `kitpkg predict` "
                           f"for the other")
        if first.test is not None and set(m.test["id"]) != set(first.test["id"]):
            raise KitError(f"{pair}: the test predictions cover different ids; predict both on the same test split")
        if m.submission_cols != first.submission_cols:
            raise KitError(f"{pair}: other submission columns ({first.submission_cols} vs {m.submission_cols}); "
                           f"use the same output.id_col/output.pred_col")


def _aligned(members: Sequence[Member], frame_of: Callable[[Member], "pd.DataFrame"], columns: List[str]) -> np.ndarray:
    """(rows, runs, columns) of every member's `columns`, rows in the first member's id order."""
    ids = frame_of(members[0])["id"]
    return np.stack([frame_of(m).set_index("id").loc[ids, columns].to_numpy(np.float64) for m in members], axis=1)


def rank01(values: np.ndarray) -> np.ndarray:
    """Ranks (ties averaged) of each column scaled into [0, 1]."""
    import pandas as pd

    ranks = pd.DataFrame(values).rank(method="average").to_numpy()
    return (ranks - 1) / max(len(values) - 1, 1)


def fold_scores(target: np.ndarray, pred: np.ndarray, folds: np.ndarray, task: Task) -> Dict[int, float]:
    """{fold: the task's metric (its registry metric: train.metric)} of blended probabilities (rows × prediction
    columns)."""
    out = {}
    for k in np.unique(folds):
        sel = folds == k
        out[int(k)] = score(task, target[sel], canonical(task, pred[sel]))
    return out


def pooled_score(target: np.ndarray, pred: np.ndarray, task: Task) -> float:
    """The metric over all OOF rows at once."""
    return fold_scores(target, pred, np.zeros(len(target), int), task)[0]


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half): report.auc's value, far faster for the search."""
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]  # first index of each run of tied scores
    counts = np.diff(np.r_[starts, len(ordered)])
    ranks = np.repeat(starts + (counts + 1) / 2, counts)  # 1-based ranks, ties averaged
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive[order]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_weights(preds: np.ndarray, target: np.ndarray, folds: np.ndarray, task: Optional[Task] = None) -> np.ndarray:
    """Non-negative weights (sum 1) over runs that best score `preds @ w` (rows × runs): the mean fold score of the
    task's metric in its direction (None or AUC: the mean fold AUC, by the fast rank statistic).

    Coordinate search from equal weights: raise or lower one run's weight by a step, keep the change only when the
    score strictly improves, halve the step when no change helps. Deterministic: the same inputs give the same weights.
    """
    score = _weights_objective(preds, target, folds, task)
    m = preds.shape[1]
    weights = np.full(m, 1.0 / m)
    best = score(weights)
    step = 0.5
    while step >= MIN_STEP:
        for _ in range(MAX_PASSES):
            improved = False
            for i in range(m):
                for delta in (step, -step):
                    trial = weights.copy()
                    trial[i] = max(0.0, trial[i] + delta)
                    if trial.sum() <= 0:
                        continue
                    trial /= trial.sum()
                    value = score(trial)
                    if value > best + 1e-12:  # the objective is signed: higher is better
                        weights, best, improved = trial, value, True
            if not improved:
                break
        step /= 2
    return weights


def _weights_objective(preds: np.ndarray, target: np.ndarray, folds: np.ndarray, task: Optional[Task]
                       ) -> Callable[[np.ndarray], float]:
    """weights -> the mean fold score of `preds @ weights`, negated for a lower-is-better metric (folds the metric
    cannot score, e.g. one class for an AUC, left out)."""
    positive = np.asarray(target) > 0.5
    groups = [(folds == k) for k in np.unique(folds)]
    if task is None or task.scorer().name == "auc":
        groups = [g for g in groups if 0 < positive[g].sum() < g.sum()]  # AUC needs both classes

        def mean_auc(w: np.ndarray) -> float:
            blended = preds @ w
            return float(np.mean([rank_auc(positive[g], blended[g]) for g in groups]))

        return mean_auc
    metric = task.scorer()
    sign = 1.0 if metric.higher_is_better else -1.0

    def objective(w: np.ndarray) -> float:
        blended = preds @ w
        values = [metric.compute(target[g], blended[g]) for g in groups]
        kept = [v for v in values if v == v]
        return sign * float(np.mean(kept)) if kept else -np.inf

    return objective


@dataclass
class Blend:
    """A blend's predictions and scores."""

    method: str
    oof: np.ndarray  # rows × classes (fit: nested)
    scores: Dict[int, float]
    weights: Optional[np.ndarray] = None  # fitted on all OOF (used for the test)
    fold_weights: Optional[Dict[int, np.ndarray]] = None  # fold k: fitted without fold k

    @property
    def mean(self) -> float:
        """Mean fold score."""
        return float(np.mean(list(self.scores.values())))

    @property
    def std(self) -> float:
        """Standard deviation of the fold scores."""
        return float(np.std(list(self.scores.values())))


def blend_oof(method: str, probs: np.ndarray, target: np.ndarray, folds: np.ndarray, task: Task) -> Blend:
    """Blend (rows × runs × classes) OOF probabilities with `method`; `fit` is scored nested (see module doc)."""
    if method == "mean":
        pred = probs.mean(axis=1)
        return Blend(method, pred, fold_scores(target, pred, folds, task))
    if method == "rank":
        pred = rank01(probs[:, :, 0]).mean(axis=1)[:, None]
        return Blend(method, pred, fold_scores(target, pred, folds, task))
    p = probs[:, :, 0]
    pred = np.zeros((len(p), 1))
    fold_weights = {}
    for k in np.unique(folds):
        held = folds == k
        fold_weights[int(k)] = fit_weights(p[~held], target[~held], folds[~held], task)
        pred[held, 0] = p[held] @ fold_weights[int(k)]
    return Blend(method, pred, fold_scores(target, pred, folds, task), fit_weights(p, target, folds, task),
                 fold_weights)


def blend_test(blend: Blend, probs: np.ndarray) -> np.ndarray:
    """Blend (rows × runs × classes) test probabilities the way `blend` blended the OOF."""
    if blend.method == "mean":
        return probs.mean(axis=1)
    if blend.method == "rank":
        return rank01(probs[:, :, 0]).mean(axis=1)[:, None]
    return (probs[:, :, 0] @ blend.weights)[:, None]


def run_blend(runs: Sequence[os.PathLike], out: os.PathLike, method: Optional[str] = None) -> Dict:
    """Blend finished runs into `out` (oof.csv, submission.csv, test_predictions.csv, blend.json, report.md)."""
    if len(runs) < 2:
        raise KitError("blend: give at least two run directories")
    out = Path(out)
    if len({Path(p).resolve() for p in runs}) < len(runs):
        raise KitError("blend: a run is given twice; give each run directory once")
    if is_run_dir(out):
        raise KitError(f"--out {out}: that is a run directory; write the blend into a folder of its own")
    members = [load_member(p) for p in runs]
    check_members(members)
    task = members[0].run.task.scored()  # one class of many blends as a binary task of that class
    if len(target_columns(task)) > 1:
        raise KitError(f"blend: runs of several target columns ({', '.join(task.labels)}: {task.kind}) are not blended "
                       f"yet; blend their prediction files by hand")
    binary = task.scored_binary
    method = method or ("fit" if binary else "mean")
    if method not in METHODS:
        raise KitError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if not binary and method in BINARY_ONLY:
        raise KitError(f"--method {method}: needs binary runs (one probability); {task.kind} runs blend with "
                       f"--method mean")
    first = read_predictions(members[0].oof, task)
    cols = prediction_columns(task)
    probs = _aligned(members, lambda m: m.oof, cols)
    blends = {name: blend_oof(name, probs, first.target, first.fold, task)
              for name in (METHODS if binary else ("mean",))}
    chosen = blends[method]
    summary = _summary(members, probs, blends, chosen, first.target, task)
    _write_outputs(members, chosen, cols, task, out)
    atomic_write_text(out / "blend.json", json.dumps(summary, indent=1))
    summary["report"] = str(write_blend_report(summary, out))
    return summary


def _summary(members: Sequence[Member], probs: np.ndarray, blends: Dict[str, Blend], chosen: Blend,
             target: np.ndarray, task: Task) -> Dict:
    """What blend.json records: members with their scores, every method's scores, the chosen one's weights."""
    folds = members[0].oof["fold"].to_numpy(int)
    runs = []
    for i, m in enumerate(members):
        scores = fold_scores(target, probs[:, i], folds, task)
        runs.append({"run": m.run.name, "path": str(m.run.path), "mean": float(np.mean(list(scores.values()))),
                     "std": float(np.std(list(scores.values()))), "oof": pooled_score(target, probs[:, i], task),
                     "folds": scores})
    methods = {name: {"mean": b.mean, "std": b.std, "oof": pooled_score(target, b.oof, task), "folds": b.scores}
               for name, b in blends.items()}
    fit = blends.get("fit")
    if fit is not None:
        in_sample = fold_scores(target, (probs[:, :, 0] @ fit.weights)[:, None], folds, task)
        methods["fit"]["in_sample_mean"] = float(np.mean(list(in_sample.values())))
        methods["fit"]["weights"] = [float(w) for w in fit.weights]
        methods["fit"]["fold_weights"] = {k: [float(x) for x in w] for k, w in fit.fold_weights.items()}
    return {"metric": task.scoring.label, "method": chosen.method, "runs": runs, "methods": methods}


def _write_outputs(members: Sequence[Member], blend: Blend, cols: List[str], task: Task, out: Path) -> None:
    """oof.csv, and test_predictions.csv + submission.csv when the runs have a test split, in the runs' formats."""
    import pandas as pd

    from ..tables import score_columns, write_csv
    from ..train import predict as P  # the OOF rows, test average and submission of a run, in the runs' formats

    first = members[0].oof
    scores = pd.DataFrame(blend.oof, columns=score_columns(blend.oof.shape[1]))
    scores.insert(0, "target", first["target"].to_numpy())
    scores.insert(0, "id", first["id"].to_numpy())
    parts = [P.oof_rows(scores[first["fold"].to_numpy() == k].reset_index(drop=True), int(k), task, "prob")
             for k in pd.unique(first["fold"])]
    oof = pd.concat(parts, ignore_index=True).set_index("id").loc[first["id"]].reset_index()
    write_csv(oof, out / "oof.csv")
    if members[0].test is None or members[0].submission_cols is None:
        return
    test_probs = blend_test(blend, _aligned(members, lambda m: m.test, cols))
    frame = pd.DataFrame(test_probs, columns=score_columns(test_probs.shape[1]))
    frame.insert(0, "id", members[0].test["id"].to_numpy())
    test = P.average_test([frame], task, "prob")
    write_csv(test, out / "test_predictions.csv")
    P.write_submission(test, out / "submission.csv", *members[0].submission_cols)


def write_blend_report(summary: Dict, out: Path) -> Path:
    """report.md of a blend: per-run and per-method scores, the fitted weights."""
    metric = summary["metric"]
    lines = [f"# Blend of {len(summary['runs'])} runs", "",
             f"Written: `{summary['method']}` (oof.csv, submission.csv).", "",
             f"| | CV {metric} (mean ± std) | pooled OOF |", "|---|---:|---:|"]
    lines += [f"| run `{r['run']}` | {r['mean']:.4f} ± {r['std']:.4f} | {r['oof']:.4f} |" for r in summary["runs"]]
    labels = {"mean": "mean of probabilities", "rank": "rank mean", "fit": "fitted weights (nested CV)"}
    lines += [f"| **{labels[name]}** | **{s['mean']:.4f} ± {s['std']:.4f}** | {s['oof']:.4f} |"
              for name, s in summary["methods"].items()]
    fit = summary["methods"].get("fit")
    if fit:
        folds = sorted(fit["fold_weights"])
        lines += ["", f"Fitted weights: fold k's blend is scored with weights fitted on the other folds; the test "
                  f"predictions use the weights fitted on all OOF (whose in-sample CV, {fit['in_sample_mean']:.4f}, "
                  f"is optimistic and not a score).", "",
                  "| run | all OOF | " + " | ".join(f"without fold {k}" for k in folds) + " |",
                  "|---|---:|" + "---:|" * len(folds)]
        for i, r in enumerate(summary["runs"]):
            lines.append(f"| `{r['run']}` | {fit['weights'][i]:.3f} | "
                         + " | ".join(f"{fit['fold_weights'][k][i]:.3f}" for k in folds) + " |")
    lines += ["", "Runs: " + ", ".join(f"`{r['path']}`" for r in summary["runs"]), ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
