"""ROC curve and AUC of binary targets (torchmetrics, any score scale, ties exact): what fold scores, the report and
blends are measured with."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def roc_curve(target: np.ndarray, score: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1) (torchmetrics)."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(*_as_tensors(target, score))
    return fpr.numpy(), tpr.numpy()


def auc(target: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (ties count one half, torchmetrics); NaN when only one class is present."""
    from torchmetrics.functional.classification import binary_auroc

    y = np.asarray(target) > 0.5
    if y.all() or not y.any():
        return float("nan")
    return float(binary_auroc(*_as_tensors(target, score)))


def _as_tensors(target: np.ndarray, score: np.ndarray):
    import torch

    # torchmetrics passes scores outside [0, 1] through a sigmoid, whose float rounding can merge or split ties;
    # dense ranks scaled into [0, 1] keep the order and every tie exactly, so any score (logits too) gives the true AUC
    _, ranks = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True)
    scaled = ranks / max(int(ranks.max(initial=0)), 1)
    return torch.as_tensor(scaled, dtype=torch.float64), torch.as_tensor(np.asarray(target) > 0.5).long()
