"""Losses of a run's Task (kitpkg/task.py): BCE for one logit, CE over classes, with label smoothing, and focal."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import KitError
from ..task import KINDS, Task

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _smooth_binary(target: torch.Tensor, smoothing: float) -> torch.Tensor:
    # symmetric smoothing towards 0.5: 1 -> 1 - s/2, 0 -> s/2
    return target * (1.0 - smoothing) + 0.5 * smoothing


def loss_of(train: Any, task: Task) -> LossFn:
    """make_loss from a TrainConfig (train.loss, label_smoothing, focal_gamma, pos_weight)."""
    return make_loss(train.loss, task, train.label_smoothing, train.focal_gamma, train.pos_weight)


def make_loss(kind: str, task: Task, label_smoothing: float = 0.0, gamma: float = 2.0,
              pos_weight: Optional[float] = None) -> LossFn:
    """loss(logits, target): `kind` bce/ce/focal (auto: bce for one logit, ce over classes);
    `pos_weight` scales the positive term of a one-logit loss (as BCEWithLogitsLoss's pos_weight)."""
    if not task.probabilities:
        return _value_loss(kind, task)
    if task.kind == "soft":
        return _distribution_loss(kind, task)
    binary = task.sigmoid  # one logit, or one per label: BCE on each
    if kind == "auto":
        kind = "bce" if binary else "ce"
    if kind not in ("bce", "ce", "focal"):
        raise KitError(f"train.loss: {kind!r} does not train a {task.kind} task; use auto, bce, ce or focal")
    if kind == "ce" and binary:
        raise KitError("train.loss: ce needs model.num_classes >= 2; use bce (or focal) for a binary target")
    if kind == "bce" and not binary:
        raise KitError("train.loss: bce needs a binary target (model.num_classes 1); use ce or focal")
    if pos_weight is not None and not binary:
        raise KitError("train.pos_weight: only for a binary target (one logit); with several classes balance them "
                       "with data.sampling.class_weights")
    weight = None if pos_weight is None else torch.tensor([float(pos_weight)])

    def binary_each(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if weight is None else weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, _smooth_binary(target, label_smoothing), pos_weight=w,
                                                  reduction="none")

    def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_each(logits.view(-1).float(), target.view(-1).float()).mean()

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long().view(-1), label_smoothing=label_smoothing)

    def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # focal = (1 - p_t)^gamma * CE; p_t from the unsmoothed target so the weighting stays a confidence measure
        if binary:
            logits, t = logits.view(-1).float(), target.view(-1).float()
            ce_each = binary_each(logits, t)
            p = torch.sigmoid(logits)
            p_t = p * t + (1 - p) * (1 - t)
        else:
            logits = logits.float()
            ce_each = F.cross_entropy(logits, target.long().view(-1), label_smoothing=label_smoothing,
                                      reduction="none")
            p_t = logits.softmax(-1).gather(1, target.long().view(-1, 1)).view(-1)
        return ((1.0 - p_t) ** gamma * ce_each).mean()

    return {"bce": bce, "ce": ce, "focal": focal}[kind]


def _value_loss(kind: str, task: Task) -> LossFn:
    """mse / smooth_l1 / l1 (auto: mse) of outputs and targets of a task predicting values (regression): B×K outputs,
    targets B (one column) or B×K, both on the standardised scale the module trains on (KitModule.standardise)."""
    losses = KINDS[task.kind].losses
    kind = losses[0] if kind == "auto" else kind
    if kind not in losses:
        raise KitError(f"train.loss: {kind!r} does not train a {task.kind} task; use auto or one of "
                       f"{', '.join(losses)}")
    fn = {"mse": F.mse_loss, "smooth_l1": F.smooth_l1_loss, "l1": F.l1_loss}[kind]

    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        return fn(outputs, target.float().reshape(outputs.shape))

    return loss


def _distribution_loss(kind: str, task: Task) -> LossFn:
    """kl (auto) / soft_ce of B×C logits against B×C target distributions (a soft task): KL(target || softmax), a
    zero target term counting 0, averaged over the batch; or the cross-entropy to the target (KL plus the target's
    entropy: the same gradients)."""
    losses = KINDS[task.kind].losses
    kind = losses[0] if kind == "auto" else kind
    if kind not in losses:
        raise KitError(f"train.loss: {kind!r} does not train a {task.kind} task; use auto or one of "
                       f"{', '.join(losses)}")

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), dim=-1)
        target = target.float().reshape(log_p.shape)
        if kind == "kl":
            return F.kl_div(log_p, target, reduction="batchmean")
        return torch.sum(-target * log_p, dim=-1).mean()

    return loss
