"""A CV run's result: per-fold scores (NaN for a fold without one), mean ± std over the others, last-epoch scores
beside them, the folds still to run and where the outputs are (`fold_result` reads them from the run's records)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .inputs import RunInputs
from .runstate import RunState


@dataclass
class CVResult:
    """Scores and output paths of a CV run.

    `scores` holds NaN for a fold without a score (an AUC of a validation split of one class); `mean`/`std` are over
    the others. `last_scores`/`last_mean`: each fold's validation metric at its last epoch (as monitored during the
    fit: no TTA, EMA weights when on), beside the best epoch's CV score: the gap is what picking the epoch on the
    fold that is then reported adds."""

    run_dir: Path
    metric: str
    scores: Dict[int, float] = field(default_factory=dict)
    mean: Optional[float] = None
    std: Optional[float] = None
    oof_score: Optional[float] = None
    oof_path: Optional[Path] = None
    submission_path: Optional[Path] = None
    report_path: Optional[Path] = None
    pending: List[int] = field(default_factory=list)
    last_scores: Dict[int, Optional[float]] = field(default_factory=dict)
    last_mean: Optional[float] = None
    best_val_mean: Optional[float] = None  # the same validation metric at the picked epochs (no TTA either)
    decisions: Optional[str] = None  # how the CV's label decisions were made when fitted on OOF (decisions.py)
    paused: bool = False  # stopped at the session budget (budget.py): `pending` continues from its checkpoints
    resume_hint: str = ""  # how to continue a paused run (budget.continue_hint: the notebook's cell, the CLI's command)

    @property
    def left_out(self) -> List[int]:
        """Finished folds without a score (NaN), left out of the mean."""
        return [k for k, v in sorted(self.scores.items()) if v != v]

    def summary(self) -> str:
        """Human-readable lines: per-fold scores (and last-epoch ones), mean ± std, where the outputs are."""
        lines = [_fold_line(k, self.metric, v, self.last_scores.get(k)) for k, v in sorted(self.scores.items())]
        scored = len(self.scores) - len(self.left_out)
        if self.mean is not None:
            lines.append(f"CV {self.metric}: {self.mean:.4f} ± {self.std:.4f} over "
                         + (f"{scored} of {len(self.scores)} folds" if self.left_out else f"{scored} folds")
                         + (f" (pooled OOF {self.oof_score:.4f})" if self.oof_score is not None else "")
                         + (f"; decisions: {self.decisions}" if self.decisions else ""))
        elif self.scores:
            lines.append(f"CV {self.metric}: none of the {len(self.scores)} finished folds has a score")
        if self.last_mean is not None:
            lines.append(f"  last epochs: {self.last_mean:.4f}, the validation metric at each fold's last epoch (no "
                         f"TTA); the CV above uses the epoch picked on these same folds"
                         + (f" (there {self.best_val_mean:.4f}: picking adds {self.best_val_mean - self.last_mean:+.4f})"
                            if self.best_val_mean is not None else ""))
        if self.pending:
            lines.append(f"folds still to run: {', '.join(map(str, self.pending))}")
        if self.paused:
            lines.append("paused before the session's end (train.time_limit)"
                         + (f"; to continue: {self.resume_hint}" if self.resume_hint else ""))
        for label, path in (("OOF", self.oof_path), ("submission", self.submission_path), ("report", self.report_path)):
            if path is not None:
                lines.append(f"{label}: {path}")
        return "\n".join(lines)


def _fold_line(k: int, metric: str, score: float, last: Optional[float]) -> str:
    if score != score:
        return f"fold {k}: {metric} n/a: its validation split holds one class; left out of the mean"
    return f"fold {k}: {metric} {score:.4f}" + (f" (last epoch {last:.4f})" if last is not None else "")


def fold_result(inputs: RunInputs, state: RunState, all_folds: Sequence[int]) -> CVResult:
    """The scores of the finished folds among `all_folds` (mean ± std over those with a score, NaN for one without;
    last-epoch scores beside them), the others pending; nothing written."""
    result = CVResult(state.run_dir, inputs.task.scorer().name)  # the name: auc, pauc, my_metric.py:score
    records = {k: state.fold(k) for k in all_folds if state.is_done(k)}
    result.scores = {k: _number(r.score) for k, r in records.items()}
    result.last_scores = {k: r.last_score for k, r in records.items()}
    result.pending = [k for k in all_folds if not state.is_done(k)]
    result.mean, result.std = mean_std(result.scores.values())
    result.last_mean, _ = mean_std(result.last_scores.values())
    if result.last_mean is not None:  # over the same folds as last_mean
        pairs = [(r.best_val_score, result.last_scores[k]) for k, r in records.items()]
        if all(best is not None for best, last in pairs if last is not None):
            result.best_val_mean, _ = mean_std(best for best, last in pairs if last is not None)
    return result


def _number(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


def mean_std(values: Any) -> Tuple[Optional[float], Optional[float]]:
    """(mean, std) of the finite values among `values` (None, NaN left out); (None, None) when there is none."""
    import numpy as np

    kept = np.array([v for v in values if v is not None and v == v], dtype=float)
    return (float(kept.mean()), float(kept.std())) if len(kept) else (None, None)
