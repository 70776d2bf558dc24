"""The validation score of a fold: any `train.metric` (kitpkg.metrics) on every sample of the validation fold.

Most metrics (AUC, kappa, KL, a user's Kaggle code) are not averages of per-batch values, so `ValMetric` keeps the
fold's predictions and targets and scores them once at the end. Its states reduce by concatenation: under DDP every
rank scores all the fold's samples (the kit's eval loader gives each sample to exactly one rank, no padding), so all
ranks hold the same value. A fold that cannot be scored (one class for an AUC) is NaN, not 0 and not an error: the
fold then keeps its last epoch as best, early stopping skips it and the CV mean leaves it out.

States are kept flat in the metric's float dtype and reshaped by the task kind at the end: a rank that saw no sample
then sends the empty tensor torchmetrics makes for it, of the same dtype and rank, and the gather still works.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import torch
from torchmetrics import Metric as _TorchMetric
from torchmetrics.utilities import dim_zero_cat

from ..metrics import Metric


class ValMetric(_TorchMetric):
    """Accumulates a fold's (prediction, target) in canonical form and computes `metric` on all of them."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, metric: Metric, **kwargs: Any):
        super().__init__(**kwargs)
        self.metric = metric
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("samples", default=torch.tensor(0), dist_reduce_fx="sum")

    @property
    def higher_is_better(self) -> bool:  # torchmetrics keeps it a class constant; here it is the metric's
        """Whether a higher value is better (the metric's direction)."""
        return self.metric.higher_is_better

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: canonical prediction and target of `metric.kind` (probabilities, not logits)."""
        self.preds.append(preds.detach().reshape(-1).to(self.dtype))
        self.target.append(target.detach().reshape(-1).to(self.dtype))
        self.samples += len(preds)

    def compute(self) -> torch.Tensor:
        """The metric of every sample seen (all ranks'); NaN when there are none or they cannot be scored."""
        n = int(self.samples)
        if not n:
            return torch.tensor(float("nan"))
        target, preds = (dim_zero_cat(s).double().cpu().numpy().reshape(n, -1) for s in (self.target, self.preds))
        return torch.tensor(self.metric.compute(*canonical(self.metric.kind, target, preds)))


def canonical(kind: str, target: np.ndarray, preds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, W) target and prediction rows back in the canonical shapes of `kind` (class indices as integers)."""
    if kind in ("binary", "score_class", "ordinal", "multiclass"):
        target = target[:, 0]
    if kind in ("binary", "score_class", "ordinal"):
        preds = preds[:, 0]
    if kind == "regression" and preds.shape[1] == 1:
        target, preds = target[:, 0], preds[:, 0]
    if kind in ("multiclass", "ordinal"):
        target = np.rint(target).astype(np.int64)
    return target, preds
