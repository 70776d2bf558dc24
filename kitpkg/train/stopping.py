"""`train.early_stopping`: Lightning's EarlyStopping on the metric that picks the best checkpoint.

Its state (best score, validations without improvement) is a Lightning callback state, so it rides in every kitpkg
checkpoint and a resumed fold keeps counting where it was.
"""
from __future__ import annotations

from typing import Any, List

from ..config import Config


def early_stopping(config: Config, monitor: str, mode: str) -> List[Any]:
    """[EarlyStopping] for train.early_stopping on `monitor` ("max"/"min"), or [] when it is off."""
    es = config.train.early_stopping
    if es is None:
        return []
    from pytorch_lightning.callbacks import EarlyStopping

    # check_finite off: a NaN score (a validation split of one class) counts as no improvement, as for best.ckpt
    return [EarlyStopping(monitor=monitor, mode=mode, patience=es.patience, min_delta=es.min_delta,
                          check_finite=False, check_on_train_epoch_end=False)]
