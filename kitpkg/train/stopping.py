"""`train.early_stopping`: Lightning's EarlyStopping on the metric that picks the best checkpoint.

Its state (best score, validations without improvement) is a Lightning callback state, so it rides in every kitpkg
checkpoint and a resumed fold keeps counting where it was.
"""
from __future__ import annotations

from typing import Any, List

import torch
from pytorch_lightning.callbacks import EarlyStopping as _LightningEarlyStopping

from ..config import Config


class EarlyStopping(_LightningEarlyStopping):
    """Lightning's EarlyStopping, except that a validation whose monitored score is NaN -- an AUC of a validation
    split holding one class (val_metric.py ValMetric) -- neither improves nor uses up patience: no score, no decision.
    Same class name, so the state key in checkpoints stays Lightning's and older checkpoints resume their count."""

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and bool(torch.isnan(torch.as_tensor(score)).any()):
            return
        super().on_validation_end(trainer, pl_module)


def early_stopping(config: Config, monitor: str, mode: str) -> List[Any]:
    """[EarlyStopping] for train.early_stopping on `monitor` ("max"/"min"), or [] when it is off."""
    es = config.train.early_stopping
    if es is None:
        return []
    # check_finite off: an infinite score counts as no improvement (as for best.ckpt); NaN is skipped (see above)
    return [EarlyStopping(monitor=monitor, mode=mode, patience=es.patience, min_delta=es.min_delta,
                          check_finite=False, check_on_train_epoch_end=False)]
