"""Stacking: a level-2 model on finished runs' OOF predictions, manifest columns and group-relative features:
`kitpkg stack RUN [RUN ...] --out DIR`.

Where a blend (blend.py) averages the runs, a stack learns from them *and* from what no run saw: the patient's
tabular data, and how a sample compares with the same patient's other samples (stack_features.py). The level-2
model is LightGBM (`lgbm`, the default: several seeds averaged) or a linear one (`linear`: logistic regression for
classes, ridge for values; scikit-learn, one fit). Per task kind (as scored: train.score_class is binary):
  binary, multiclass   one classifier (class probabilities)
  multilabel           one binary classifier per label column
  regression, ordinal  one regressor per value column (ordinal: of the class index)
  soft                 refused (a distribution target needs a model of its own)

Nested and honest: fold k's predictions come from level-2 models fitted on the other folds' OOF rows only (the runs'
own folds); LightGBM's early stopping watches an inner fold, one of those training folds (seed s: the s-th of them,
so the seeds' models together learn from every training fold), never fold k. The CV is fold k's score of those
predictions with the runs' metric (blend.fold_scores). The test predictions (test_predictions.csv, submission.csv)
come from level-2 models fitted the same way on all OOF rows, applied to the runs' fold-averaged test predictions:
stack.json says so ("test"). Outputs as a blend's: oof.csv (the nested predictions), test_predictions.csv,
submission.csv (decisions.submission_of through blend.prediction_outputs), stack.json, report.md with
importance.png.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import KitError
from ..fsutil import atomic_write_text
from ..predictions import prediction_columns, read_predictions
from ..task import Task
from .blend import (aligned, blend_oof, blend_summary, methods_for, open_members, prediction_outputs, scored,
                    write_outputs)
from .stack_features import AUTO, Features, build_features

MODELS = ("lgbm", "linear")
STACKED_KINDS = ("binary", "multiclass", "multilabel", "regression", "ordinal")
LGBM_PARAMS = {"n_estimators": 1000, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20,
               "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "reg_lambda": 1.0,
               "deterministic": True, "force_row_wise": True, "verbose": -1}
EARLY_STOPPING = 50  # rounds without a better inner-fold loss
TEST_NOTE = ("level-2 models fitted on all OOF rows (early stopping on an inner fold), applied to the runs' "
             "fold-averaged test predictions (test_predictions.csv)")


@dataclass(frozen=True)
class Head:
    """One level-2 model of the task: its target column (index into the target matrix), whether it classifies (else
    regresses) and its prediction columns (1: one class's probability or a value; C: every class's probability)."""

    column: int
    classify: bool
    width: int = 1


def heads_of(task: Task) -> List[Head]:
    """The level-2 models a task needs (module docstring); KitError for a kind not stacked."""
    if task.scored_kind not in STACKED_KINDS:
        raise KitError(f"stack: {task.kind} runs are not stacked (a distribution target); blend them with "
                       f"`kitpkg blend`")
    if task.scored_binary:
        return [Head(0, True)]
    if task.kind == "multiclass":
        return [Head(0, True, task.num_classes)]
    if task.kind == "multilabel":
        return [Head(j, True) for j in range(len(task.labels))]
    return [Head(j, False) for j in range(len(prediction_columns(task)))]


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise KitError("stack --model lgbm needs LightGBM: `pip install lightgbm` (or `pip install kitpkg[stack]`), "
                       "or use --model linear") from None
    return lightgbm


def _linear_model(features: Features, classify: bool):
    """A scikit-learn pipeline: numbers imputed (median, with missing flags) and standardised, categories one-hot,
    then logistic regression (classes) or ridge (values)."""
    try:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler
    except ImportError:
        raise KitError("stack --model linear needs scikit-learn: `pip install scikit-learn`") from None
    numbers = [n for n in features.names if n not in features.categorical]
    prepare = ColumnTransformer(
        [("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numbers),
         ("cat", OneHotEncoder(handle_unknown="ignore"), features.categorical)])
    return make_pipeline(prepare, LogisticRegression(max_iter=2000) if classify else Ridge(alpha=1.0))


def _as_text(frame, categorical: Sequence[str]):
    """Categories as text (missing: ""), what OneHotEncoder takes."""
    frame = frame.copy()
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), "")
    return frame


@dataclass
class Level2:
    """How the level-2 models are made: `model` (lgbm or linear), `seeds`, LightGBM's parameters."""

    model: str
    seeds: int
    params: Dict[str, Any]

    def fit_predict(self, features: Features, y: np.ndarray, head: Head, folds: np.ndarray, train: np.ndarray,
                    applies: Sequence[Any]) -> Tuple[List[np.ndarray], Dict[str, float]]:
        """Fit on the rows `train` (mask over OOF rows) and predict each frame of `applies` (seeds averaged):
        (predictions: N × 1, or N × classes for several classes, per frame; importance per feature)."""
        x = features.oof
        if self.model == "linear":
            est = _linear_model(features, head.classify)
            est.fit(_as_text(x[train], features.categorical), y[train])
            preds = [self._predict(est, _as_text(a, features.categorical), head) for a in applies]
            return preds, _linear_importance(est)
        lgb = _lightgbm()
        train_folds = sorted(set(folds[train].tolist()))
        sums: List[np.ndarray] = [0.0] * len(applies)  # type: ignore[list-item]
        gain: Dict[str, float] = {}
        for seed in range(self.seeds):
            inner = train & (folds == train_folds[seed % len(train_folds)]) if len(train_folds) > 1 else None
            fit_rows = train & ~inner if inner is not None else train
            cls = lgb.LGBMClassifier if head.classify else lgb.LGBMRegressor
            est = cls(**{**self.params, "random_state": seed, "importance_type": "gain"})
            fit = {} if inner is None else {**_eval_rows(cls, x[inner], y[inner]),
                                            "callbacks": [lgb.early_stopping(EARLY_STOPPING, verbose=False)]}
            est.fit(x[fit_rows], y[fit_rows], **fit)
            for i, a in enumerate(applies):
                sums[i] = sums[i] + self._predict(est, a, head)
            for name, g in zip(features.names, est.feature_importances_):
                gain[name] = gain.get(name, 0.0) + float(g) / self.seeds
        return [s / self.seeds for s in sums], gain

    @staticmethod
    def _predict(est, frame, head: Head) -> np.ndarray:
        """N × head.width: a value, the positive class's probability, or every class's (a class the fit never saw:
        probability 0)."""
        if not head.classify:
            return np.asarray(est.predict(frame), np.float64).reshape(-1, 1)
        proba = est.predict_proba(frame)
        out = np.zeros((len(frame), max(head.width, 2)))
        for j, c in enumerate(est.classes_):
            out[:, int(c)] = proba[:, j]
        return out[:, 1:] if head.width == 1 else out


def _eval_rows(cls, x, y) -> Dict[str, Any]:
    """The early-stopping rows as LightGBM's fit takes them: eval_X/eval_y (4.7 on), else eval_set."""
    import inspect

    if "eval_X" in inspect.signature(cls.fit).parameters:
        return {"eval_X": (x,), "eval_y": (y,)}
    return {"eval_set": [(x, y)]}


def _linear_importance(pipeline) -> Dict[str, float]:
    """|coefficient| of each standardised input (mean over classes) by the pipeline's feature names."""
    names = pipeline[0].get_feature_names_out()
    coef = np.abs(np.atleast_2d(pipeline[-1].coef_)).mean(axis=0)
    return {str(n).split("__", 1)[-1]: float(c) for n, c in zip(names, coef)}


def _stack_heads(level2: Level2, features: Features, task: Task, target: np.ndarray, folds: np.ndarray
                 ) -> Tuple[np.ndarray, Optional[np.ndarray], Dict[str, float]]:
    """(nested OOF predictions, test predictions of the all-OOF fit, its importance per feature), predictions rows ×
    prediction columns as scored."""
    heads = heads_of(task)
    matrix = target.reshape(len(target), -1)
    oof, test, importance = [], [], {}
    for head in heads:
        y = matrix[:, head.column].astype(np.int64 if head.classify else np.float64)
        pred = np.zeros((len(y), head.width))
        for k in np.unique(folds):
            held = folds == k
            (pred[held],), _ = level2.fit_predict(features, y, head, folds, ~held, [features.oof[held]])
        oof.append(pred)
        applied = [] if features.test is None else [features.test]
        preds, gain = level2.fit_predict(features, y, head, folds, np.ones(len(y), bool), applied)
        test += preds
        for name, g in gain.items():
            importance[name] = importance.get(name, 0.0) + g / len(heads)
    return np.hstack(oof), np.hstack(test) if test else None, importance


def run_stack(runs: Sequence[os.PathLike], out: os.PathLike, columns: Sequence[str] = (),
              group_col: Optional[str] = AUTO, model: str = "lgbm", seeds: int = 3,
              sample_submission: Optional[os.PathLike] = None, params: Optional[Dict[str, Any]] = None) -> Dict:
    """Stack finished runs into `out` (oof.csv, test_predictions.csv, submission.csv, stack.json, report.md,
    importance.png): level-2 `model` (lgbm or linear; `seeds` LightGBM seeds averaged, `params` over LGBM_PARAMS) on
    the runs' outputs, the manifest `columns` and the group features over `group_col` (auto: the manifest's;
    None/"none": off); see the module docstring."""
    if not runs:
        raise KitError("stack: give at least one run directory")
    if model not in MODELS:
        raise KitError(f"--model {model}: choose one of {', '.join(MODELS)}")
    if int(seeds) < 1:
        raise KitError(f"--seeds {seeds}: give 1 or more")
    if model == "lgbm":
        _lightgbm()  # refused before any work
    out = Path(out)
    members, sample = open_members(runs, out, sample_submission, "stack")
    task = members[0].run.task.scored()
    heads_of(task)
    features = build_features(members, [c.strip() for c in columns if c.strip()], group_col)
    first = read_predictions(members[0].oof, task)
    target, folds = np.ascontiguousarray(first.target), first.fold
    if len(np.unique(folds)) < 2:
        raise KitError(f"{members[0].run.path}: the OOF holds one fold; stacking needs the runs' K folds")
    level2 = Level2(model, int(seeds) if model == "lgbm" else 1, {**LGBM_PARAMS, **(params or {})})
    oof, test, importance = _stack_heads(level2, features, task, target, folds)
    cols = prediction_columns(task)
    probs = aligned(members, lambda m: m.oof, cols)
    blends = {name: blend_oof(name, probs, target, folds, task) for name in methods_for(task)}
    summary = blend_summary(members, probs, blends, blends[methods_for(task)[0]], target, task)
    del summary["method"]
    summary["blends"] = summary.pop("methods")
    summary.update(kind="stack", model=model, seeds=level2.seeds, features=features.names,
                   columns=features.columns, categorical=features.categorical, group_col=features.group_col,
                   params=level2.params if model == "lgbm" else {"linear": _linear_name(task)},
                   stack=scored(target, oof, folds, task),
                   test=TEST_NOTE if test is not None else None,
                   importance=dict(sorted(importance.items(), key=lambda kv: -kv[1])))
    outputs = prediction_outputs(members, oof, test, task, sample)  # built whole first: a refusal writes nothing
    if outputs.decisions is not None:
        summary["thresholds"] = outputs.decisions.record
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(outputs, out)
    summary["importance_plot"] = plot_importance(summary["importance"], out / "importance.png", model)
    atomic_write_text(out / "stack.json", json.dumps(summary, indent=1))
    summary["report"] = str(write_stack_report(summary, out))
    return summary


def columns_option(value: Optional[str]) -> List[str]:
    """--columns: "a,b,c", or a YAML file holding a list of names or {columns: [names]}."""
    if not value:
        return []
    path = Path(value)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        if not path.is_file():
            raise KitError(f"--columns {value}: no such file; give a YAML list of manifest columns, or a,b,c")
        data = yaml.safe_load(path.read_text())
        names = data.get("columns") if isinstance(data, dict) else data
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise KitError(f"--columns {value}: expected a YAML list of column names (or columns: [a, b])")
        return names
    return [c.strip() for c in value.split(",") if c.strip()]


def _linear_name(task: Task) -> str:
    """The linear level-2 model of a task's heads."""
    return "logistic regression (C=1)" if heads_of(task)[0].classify else "ridge (alpha=1)"


def best_blend(summary: Dict) -> Tuple[str, Dict]:
    """The blend method with the best mean CV in the metric's direction (name, its scores)."""
    higher = summary.get("higher_is_better", True)
    pick: Callable = max if higher else min
    name = pick(summary["blends"], key=lambda n: summary["blends"][n]["mean"])
    return name, summary["blends"][name]


def plot_importance(importance: Dict[str, float], path: Path, model: str, top: int = 25) -> str:
    """The level-2 importances (share of the total), largest first, as a bar chart at `path`; return its name."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    items = list(importance.items())[:top][::-1]
    total = sum(importance.values()) or 1.0
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.2))
    ax.barh([n for n, _ in items], [v / total for _, v in items], color="tab:blue")
    what = "split gain (LightGBM, all-OOF fit, seeds averaged)" if model == "lgbm" else \
        "|coefficient| of the standardised input (all-OOF fit)"
    ax.set(xlabel=f"share of {what}", title=f"Level-2 feature importance (top {len(items)})")
    ax.tick_params(axis="y", labelsize=7)
    return save_figure(fig, path)


def write_stack_report(summary: Dict, out: Path) -> Path:
    """report.md of a stack: each run's CV, each blend's, the stack's (nested), the features and the importances."""
    metric, stack = summary["metric"], summary["stack"]
    best, scores = best_blend(summary)
    labels = {"mean": "blend: mean", "rank": "blend: rank mean", "fit": "blend: fitted weights (nested)"}
    lines = [f"# Stack of {len(summary['runs'])} run{'s' if len(summary['runs']) > 1 else ''}", "",
             f"Level-2 model: `{summary['model']}` ({summary['seeds']} seed{'s' if summary['seeds'] > 1 else ''}); "
             f"written: oof.csv (nested), submission.csv.", "",
             f"| | CV {metric} (mean ± std) | pooled OOF |", "|---|---:|---:|"]
    lines += [f"| run `{r['run']}` | {r['mean']:.4f} ± {r['std']:.4f} | {r['oof']:.4f} |" for r in summary["runs"]]
    lines += [f"| {labels[n]}{' (best blend)' if n == best else ''} | {s['mean']:.4f} ± {s['std']:.4f} | "
              f"{s['oof']:.4f} |" for n, s in summary["blends"].items()]
    lines += [f"| **stack (nested)** | **{stack['mean']:.4f} ± {stack['std']:.4f}** | {stack['oof']:.4f} |", "",
              f"Stack minus best blend ({best}): {stack['mean'] - scores['mean']:+.4f} mean fold {metric}.", "",
              "Nested: fold k is predicted by level-2 models fitted on the other folds' OOF rows only (early "
              "stopping on one of those folds); the test predictions by " + (summary["test"] or "none (no test "
              "split)") + ".", "",
              "| fold | " + " | ".join(str(k) for k in stack["folds"]) + " |",
              "|---|" + "---:|" * len(stack["folds"]),
              "| stack | " + " | ".join(f"{v:.4f}" for v in stack["folds"].values()) + " |", "",
              f"Features ({len(summary['features'])}): run outputs, manifest columns "
              f"{', '.join(summary['columns']) or 'none'}, group features over "
              f"{summary['group_col'] or 'none'}.", "",
              f"![level-2 feature importance]({summary['importance_plot']})", "",
              "Runs: " + ", ".join(f"`{r['path']}`" for r in summary["runs"]), ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
