"""Many classes trained, one scored (`train.score_class`): train on all classes (softmax), score, predict and submit
the probability of one of them -- the SIIM-ISIC 2020 1st place trained on the 9 `diagnosis` classes and scored the
melanoma probability. OOF rows then look like a binary run's: target = 1 for that class, prediction = its probability
(prob_0..prob_{C-1} kept beside them), and the metric is that class's AUC.

An AUC needs both classes: a validation split of one class has none; the validation metric (val_metric.py) scores it
NaN, so the fold keeps its last epoch as best, early stopping skips it (stopping.py) and the CV mean leaves it out.
"""
from __future__ import annotations

from typing import List, Optional, Union

from ..errors import KitError


def score_class_index(score_class: Union[None, int, str], classes: Optional[List[str]], num_classes: int,
                      where: str) -> Optional[int]:
    """The target index `train.score_class` names (a class name of the manifest's `classes`, or an index); None when
    unset. KitError naming the classes for a name that is not one, or for a binary target."""
    if score_class is None:
        return None
    if num_classes < 2:
        raise KitError("train.score_class: needs a multi-class target (here one logit: a binary task already scores "
                       "its positive class); set it to null, or train on a multi-class label column")
    if classes is not None and str(score_class) in classes:
        return classes.index(str(score_class))
    try:
        index = int(str(score_class))
    except ValueError:
        index = None
    if index is None or not 0 <= index < num_classes:
        named = ", ".join(classes) if classes else f"indices 0..{num_classes - 1}"
        raise KitError(f"train.score_class: {score_class!r} is not a class of {where} (classes: {named})")
    return index

