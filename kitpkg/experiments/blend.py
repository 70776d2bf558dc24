"""Blends of finished runs that share their folds, on their OOF predictions: `kitpkg blend RUN … --out DIR`.

Methods: `mean` (of probabilities or values), `rank` (mean of each run's ranks scaled to [0, 1], column by column) and
`fit` (one non-negative weight per run, summing to 1, fitted to improve the mean fold score of the runs' metric --
train.metric: AUC, mean AUC, RMSE, KL, a user's file... over the whole prediction matrix, in its direction -- by a
deterministic coordinate search from equal weights). The fitted blend's CV is nested: fold k is scored with weights
fitted on the other folds only, so a run of noise cannot raise it; the test predictions use weights fitted on all OOF.
Per task kind (`methods_for`; the first is the default):
  binary (and train.score_class), multilabel   fit, mean, rank
  regression, soft                              fit, mean (ranks would leave the values' units or the distribution)
  multiclass, ordinal                           mean
A soft blend's rows are renormalised to sum to 1 (a weighted mean of distributions is one, up to rounding).

Outputs in DIR: oof.csv (a run's columns; `fit`: the nested predictions), test_predictions.csv (a run's columns) and
submission.csv, blend.json (members, weights, scores) and report.md. The submission is written as `kitpkg cv` writes
a run's (train/decisions.py `submission_of`): the task's layout with the id/prediction column names of the first run's
submission.csv, or the competition's sample (`--sample-submission`; state.json does not record a run's
output.sample_submission, so the blend is given it); thresholds the metric's decisions need are fitted nested on the
blend's OOF (decisions.fit_decisions) and recorded in blend.json.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import Config, OutputConfig
from ..errors import KitError
from ..fsutil import atomic_write_text
from ..predictions import canonical, prediction_columns, read_predictions, score, target_columns
from ..rundir import is_run_dir
from ..submission import Sample, read_sample
from ..task import Task
from .runs import Run, load_run, split_difference

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("fit", "mean", "rank")
REFUSED = {"fit": "needs binary, multilabel, regression or soft runs (a weighted mean of probabilities or values)",
           "rank": "needs binary or multilabel runs (probabilities scored by their order, column by column)"}
MIN_STEP = 1 / 128  # finest weight change the coordinate search tries
MAX_PASSES = 200  # guard: passes over the runs per step size


@dataclass
class Member:
    """A finished run's predictions, aligned to the first run's id order."""

    run: Run
    oof: "pd.DataFrame"  # oof.csv
    test: Optional["pd.DataFrame"]  # test_predictions.csv (None without a test split)
    submission_cols: Optional[Tuple[str, str]]  # the first two columns of its submission.csv (id_col, pred_col)


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
    """Refuse runs that are not the same task (kind, outputs, label columns) on the same split and the same test ids,
    naming what differs."""
    first = members[0]
    targets = target_columns(first.run.task.scored())
    for m in members[1:]:
        pair = f"{first.run.path} and {m.run.path}"
        if (m.run.task.kind, m.run.task.outputs) != (first.run.task.kind, first.run.task.outputs):
            raise KitError(f"{pair}: other tasks ({first.run.task.describe()} vs {m.run.task.describe()}); "
                           f"blend runs of one task")
        if m.run.task.labels != first.run.task.labels:
            raise KitError(f"{pair}: other label columns ({', '.join(first.run.task.labels)} vs "
                           f"{', '.join(m.run.task.labels)}); blend runs trained on the same label columns")
        diff = split_difference(dict(zip(first.oof["id"], first.oof["fold"])), dict(zip(m.oof["id"], m.oof["fold"])))
        if diff:
            raise KitError(f"{pair}: different folds ({diff}); blend only runs on the same fold split")
        aligned = m.oof.set_index("id").loc[first.oof["id"]]
        if not np.allclose(aligned[targets].to_numpy(float), first.oof[targets].to_numpy(float)):
            raise KitError(f"{pair}: the OOF targets differ; blend only runs on the same labels")
        if (first.test is None) != (m.test is None):
            raise KitError(f"{pair}: only one has test predictions (test_predictions.csv); run `kitpkg predict` "
                           f"for the other")
        if first.test is not None and set(m.test["id"]) != set(first.test["id"]):
            raise KitError(f"{pair}: the test predictions cover different ids; predict both on the same test split")
        if m.submission_cols != first.submission_cols:
            raise KitError(f"{pair}: other submission columns ({first.submission_cols} vs {m.submission_cols}); "
                           f"use the same output.id_col/output.pred_col")


def aligned(members: Sequence[Member], frame_of: Callable[[Member], "pd.DataFrame"], columns: List[str]) -> np.ndarray:
    """(rows, runs, columns) of every member's `columns`, rows in the first member's id order."""
    ids = frame_of(members[0])["id"]
    return np.stack([frame_of(m).set_index("id").loc[ids, columns].to_numpy(np.float64) for m in members], axis=1)


def rank01(values: np.ndarray) -> np.ndarray:
    """Ranks (ties averaged) of each column scaled into [0, 1]."""
    import pandas as pd

    ranks = pd.DataFrame(values).rank(method="average").to_numpy()
    return (ranks - 1) / max(len(values) - 1, 1)


def methods_for(task: Task) -> Tuple[str, ...]:
    """The methods runs of `task` (as scored) blend by, the default first (module docstring)."""
    if task.scored_binary or task.kind == "multilabel":
        return METHODS
    if task.kind in ("regression", "soft"):
        return ("fit", "mean")
    return ("mean",)


def weighted(preds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean over runs of `preds`: rows × runs (-> rows) or rows × runs × columns (-> rows × columns),
    one weight per run for every column."""
    if preds.ndim == 2:
        return preds @ weights
    # C order: torchmetrics' regression metrics view their input flat, which a column-stacked array cannot be
    return np.ascontiguousarray(np.stack([preds[:, :, j] @ weights for j in range(preds.shape[2])], axis=1))


def as_task_rows(task: Task, pred: np.ndarray) -> np.ndarray:
    """A blended prediction as the task's: a soft task's rows renormalised to sum to 1 (else as given)."""
    if task.kind != "soft":
        return pred
    return pred / pred.sum(axis=1, keepdims=True)


def rank_columns(probs: np.ndarray) -> np.ndarray:
    """rows × runs × columns -> rows × columns: each column's rank mean (ranks of each run scaled into [0, 1])."""
    return np.ascontiguousarray(np.stack([rank01(probs[:, :, j]).mean(axis=1) for j in range(probs.shape[2])], axis=1))


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
    """Non-negative weights (sum 1) over runs that best score `weighted(preds, w)` (rows × runs, or rows × runs ×
    columns against a rows × columns target): the mean fold score of the task's metric in its direction (None or AUC:
    the mean fold AUC, by the fast rank statistic).

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
        blended = as_task_rows(task, weighted(preds, w))
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


def _fit_input(probs: np.ndarray) -> np.ndarray:
    """What the weights are fitted on: rows × runs for one prediction column, else rows × runs × columns."""
    return probs[:, :, 0] if probs.shape[2] == 1 else probs


def blend_oof(method: str, probs: np.ndarray, target: np.ndarray, folds: np.ndarray, task: Task) -> Blend:
    """Blend (rows × runs × columns) OOF predictions with `method`; `fit` is scored nested (see module doc)."""
    if method == "mean":
        pred = as_task_rows(task, probs.mean(axis=1))
        return Blend(method, pred, fold_scores(target, pred, folds, task))
    if method == "rank":
        pred = rank_columns(probs)
        return Blend(method, pred, fold_scores(target, pred, folds, task))
    p = _fit_input(probs)
    pred = np.zeros((len(p), probs.shape[2]))
    fold_weights = {}
    for k in np.unique(folds):
        held = folds == k
        fold_weights[int(k)] = fit_weights(p[~held], target[~held], folds[~held], task)
        pred[held] = weighted(p[held], fold_weights[int(k)]).reshape(int(held.sum()), -1)
    pred = as_task_rows(task, pred)
    return Blend(method, pred, fold_scores(target, pred, folds, task), fit_weights(p, target, folds, task),
                 fold_weights)


def blend_test(blend: Blend, probs: np.ndarray, task: Task) -> np.ndarray:
    """Blend (rows × runs × columns) test predictions the way `blend` blended the OOF."""
    if blend.method == "mean":
        return as_task_rows(task, probs.mean(axis=1))
    if blend.method == "rank":
        return rank_columns(probs)
    return as_task_rows(task, weighted(_fit_input(probs), blend.weights).reshape(len(probs), -1))


def run_blend(runs: Sequence[os.PathLike], out: os.PathLike, method: Optional[str] = None,
              sample_submission: Optional[os.PathLike] = None) -> Dict:
    """Blend finished runs into `out` (oof.csv, submission.csv, test_predictions.csv, blend.json, report.md);
    `sample_submission`: the competition's sample the submission takes the layout of (None: the kit's layout)."""
    if len(runs) < 2:
        raise KitError("blend: give at least two run directories")
    out = Path(out)
    members, sample = open_members(runs, out, sample_submission, "blend")
    task = members[0].run.task.scored()  # one class of many blends as a binary task of that class
    allowed = methods_for(task)
    method = method or allowed[0]
    if method not in METHODS:
        raise KitError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if method not in allowed:
        raise KitError(f"--method {method}: {REFUSED[method]}; {task.kind} runs blend with --method "
                       f"{' or '.join(allowed)}")
    first = read_predictions(members[0].oof, task)
    cols = prediction_columns(task)
    probs = aligned(members, lambda m: m.oof, cols)
    target = np.ascontiguousarray(first.target)  # C order, as weighted() gives the predictions
    blends = {name: blend_oof(name, probs, target, first.fold, task) for name in allowed}
    chosen = blends[method]
    summary = blend_summary(members, probs, blends, chosen, target, task)
    outputs = _outputs(members, chosen, cols, task, sample)  # built whole first: a refusal writes nothing
    if outputs.decisions is not None:
        summary["thresholds"] = outputs.decisions.record
    write_outputs(outputs, out)
    atomic_write_text(out / "blend.json", json.dumps(summary, indent=1))
    summary["report"] = str(write_blend_report(summary, out))
    return summary


def open_members(runs: Sequence[os.PathLike], out: Path, sample_submission: Optional[os.PathLike], what: str
                 ) -> Tuple[List[Member], Optional[Sample]]:
    """The checked members of a blend or stack (`what`) written into `out`, and the sample submission: refused when a
    run is given twice, `out` is a run directory, the runs differ (check_members) or a sample has no test to fill."""
    if len({Path(p).resolve() for p in runs}) < len(runs):
        raise KitError(f"{what}: a run is given twice; give each run directory once")
    if is_run_dir(out):
        raise KitError(f"--out {out}: that is a run directory; write the {what} into a folder of its own")
    sample = read_sample(sample_submission) if sample_submission else None  # a missing file: refused before work
    members = [load_member(p) for p in runs]
    check_members(members)
    if sample is not None and members[0].test is None:
        raise KitError(f"--sample-submission {sample.path}: the runs have no test predictions (test_predictions.csv) "
                       f"to submit; run `kitpkg predict` for each run first")
    return members, sample


def scored(target: np.ndarray, pred: np.ndarray, folds: np.ndarray, task: Task) -> Dict[str, Any]:
    """{mean, std, oof, folds} of predictions: their fold scores' mean ± std, the pooled OOF score, the fold scores
    (what blend.json and stack.json record for each run, blend and stack)."""
    scores = fold_scores(target, pred, folds, task)
    values = list(scores.values())
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "oof": pooled_score(target, pred, task),
            "folds": scores}


def blend_summary(members: Sequence[Member], probs: np.ndarray, blends: Dict[str, Blend], chosen: Blend,
                  target: np.ndarray, task: Task) -> Dict:
    """What blend.json records: members with their scores, every method's scores, the chosen one's weights."""
    folds = members[0].oof["fold"].to_numpy(int)
    runs = [{"run": m.run.name, "path": str(m.run.path), **scored(target, probs[:, i], folds, task)}
            for i, m in enumerate(members)]
    methods = {name: {"mean": b.mean, "std": b.std, "oof": pooled_score(target, b.oof, task), "folds": b.scores}
               for name, b in blends.items()}
    fit = blends.get("fit")
    if fit is not None:
        in_sample = fold_scores(target, blend_test(fit, probs, task), folds, task)
        methods["fit"]["in_sample_mean"] = float(np.mean(list(in_sample.values())))
        methods["fit"]["weights"] = [float(w) for w in fit.weights]
        methods["fit"]["fold_weights"] = {k: [float(x) for x in w] for k, w in fit.fold_weights.items()}
    return {"metric": task.scoring.label, "higher_is_better": task.scoring.higher_is_better, "method": chosen.method,
            "runs": runs, "methods": methods}


@dataclass
class Outputs:
    """A blend's files as frames: oof.csv, and test_predictions.csv + submission.csv (None without a test split or
    without a submission layout: no run's submission.csv and no sample); the decisions fitted for the submission."""

    oof: "pd.DataFrame"
    test: Optional["pd.DataFrame"] = None
    submission: Optional["pd.DataFrame"] = None
    decisions: Optional[Any] = None  # train.decisions.Decisions


def _outputs(members: Sequence[Member], blend: Blend, cols: List[str], task: Task, sample: Optional[Sample]
             ) -> Outputs:
    """The blend's files in the runs' formats (prediction_outputs)."""
    test = None if members[0].test is None else blend_test(blend, aligned(members, lambda m: m.test, cols), task)
    return prediction_outputs(members, blend.oof, test, task, sample)


def prediction_outputs(members: Sequence[Member], oof: np.ndarray, test: Optional[np.ndarray], task: Task,
                       sample: Optional[Sample]) -> Outputs:
    """Files in the runs' formats of predictions (rows × prediction columns, as scored) of the members' OOF rows (in
    the first member's order) and test rows (its test order; None without a test split); the submission through
    decisions.submission_of (as `kitpkg cv`'s), decided by thresholds fitted nested on `oof` where the metric needs
    them."""
    import pandas as pd

    from ..tables import score_columns, target_score_columns
    from ..train import decisions as D
    from ..train import predict as P  # the OOF rows and test average of a run, in the runs' formats

    first = members[0].oof
    scores = pd.DataFrame(oof, columns=score_columns(oof.shape[1]))
    targets = first[target_columns(task)].to_numpy()
    for j, column in reversed(list(enumerate(target_score_columns(targets.shape[1])))):
        scores.insert(0, column, targets[:, j])
    scores.insert(0, "id", first["id"].to_numpy())
    parts = [P.oof_rows(scores[first["fold"].to_numpy() == k].reset_index(drop=True), int(k), task, "prob")
             for k in pd.unique(first["fold"])]
    outputs = Outputs(pd.concat(parts, ignore_index=True).set_index("id").loc[first["id"]].reset_index())
    columns = members[0].submission_cols  # the kit's layout is named as the first run's submission
    if columns is None and sample is not None:
        columns = (sample.id_col, sample.columns[0])  # unused: the sample's layout names every column
    if test is None or columns is None:
        return outputs
    frame = pd.DataFrame(test, columns=score_columns(test.shape[1]))
    frame.insert(0, "id", members[0].test["id"].to_numpy())
    outputs.test = P.average_test([frame], task, "prob")
    outputs.decisions = D.fit_decisions(task, outputs.oof, sample)
    outputs.submission = D.submission_of(task, outputs.test, _output_config(columns, sample),
                                         None if outputs.decisions is None else outputs.decisions.params)
    return outputs


def _output_config(columns: Tuple[str, str], sample: Optional[Sample]) -> Config:
    """A Config holding only what submission_of reads (output.*): the first run's submission column names and the
    sample; a blend has no config of its own."""
    return Config(output=OutputConfig(id_col=columns[0], pred_col=columns[1],
                                      sample_submission=None if sample is None else str(sample.path)))


def write_outputs(outputs: Outputs, out: Path) -> None:
    """oof.csv, and test_predictions.csv + submission.csv when there are (each atomically)."""
    from ..tables import write_csv

    write_csv(outputs.oof, out / "oof.csv")
    if outputs.submission is not None:
        write_csv(outputs.test, out / "test_predictions.csv")
        write_csv(outputs.submission, out / "submission.csv")


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
