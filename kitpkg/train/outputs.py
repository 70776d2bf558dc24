"""The torch side of a run's Task (kitpkg/task.py): what the network's outputs mean.

The activation that turns logits into the task's probabilities (sigmoid for one logit, softmax over classes), the
validation metric logged per epoch and what it is updated with, and the target the metric sees (train.score_class:
1 for the scored class). The loss is losses.py's (`loss_of(train, task)`), mixing's targets mixing.py's.
"""
from __future__ import annotations

from typing import Any

import torch

from ..task import Task


def to_prob(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """The task's predictions from outputs: sigmoid (one logit, B×1), softmax over the classes, or the values as
    they are (regression: already in the CSV's units, KitModule.predict_step)."""
    if not task.probabilities:
        return logits
    return logits.sigmoid() if task.sigmoid else logits.softmax(-1)


def scores_to_prob(task: Task, scores: torch.Tensor, space: str) -> torch.Tensor:
    """Averaged scores (probabilities or logits, per predict.average `space`) -> probabilities."""
    return scores if space == "prob" else to_prob(task, scores)


def scored_target(task: Task, target: Any) -> Any:
    """The target the metric sees: as given, or 1/0 for train.score_class's class / any other."""
    return target if task.score_index is None else (target == task.score_index) * 1


def make_val_metric(task: Task) -> Any:
    """The fold's validation metric: the task's registry metric (task.scorer()) on every sample of the validation
    fold (ValMetric: whole-fold, DDP-safe), logged as task.scoring.key."""
    from .val_metric import ValMetric

    return ValMetric(task.scorer())


def update_val_metric(task: Task, metric: Any, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Feed one validation batch to `metric` as the canonical arrays of the task's kind (kitpkg/metrics.py):
    probabilities from logits (P(positive) for one logit or train.score_class's class, a row per sample over classes
    or labels), or the values (in the CSV's units: `logits` already put back by the module) of a regression."""
    logits = logits.float()
    if not task.probabilities:
        metric.update(logits, target.float())
    elif task.kind in ("multilabel", "soft"):
        metric.update(to_prob(task, logits), target.float())
    elif task.one_logit:
        metric.update(logits.view(-1).sigmoid(), target.view(-1).long())
    elif task.score_index is not None:
        metric.update(logits.softmax(-1)[:, task.score_index], scored_target(task, target.view(-1).long()))
    else:
        metric.update(logits.softmax(-1), target.view(-1).long())
