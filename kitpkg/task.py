"""What a run predicts and how it is scored: the `Task`, one home for every decision that depends on the kind of target.

A Task says: the kind (binary, multiclass; multilabel, regression, ordinal and soft to follow), the label column(s), the
class names, how many outputs the network has, which class `train.score_class` scores, and the metric (a name and its
direction). The torch side of a task (activation, loss, validation metric) lives in kitpkg/train/outputs.py and
losses.py; the columns of its OOF and test prediction files in kitpkg/predictions.py. A run records its task in
state.json ("task"); a run directory made before that is read with the task its num_classes and train.score_class
imply (`task_of_outputs`). Adding a task kind is one entry in `KINDS` (and its torch side in outputs.py); a
metric one entry in `METRICS`.

Kinds today:
  binary      one 0/1 column, one logit (sigmoid); scored by AUC; submits P(positive)
  multiclass  one class column, one logit per class (softmax); scored by accuracy; submits the class index
  multiclass + score_class   trained on every class, scored (AUC) and submitted as one class's probability
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from .errors import KitError

AUTO = "auto"


@dataclass(frozen=True)
class Metric:
    """A CV metric by name: its direction, its name in tables and reports, and its logged validation key."""

    name: str
    higher_is_better: bool
    label: str  # in tables and reports ("AUC")
    key: str  # the validation key logged per epoch and monitored ("val_auc")


METRICS: Dict[str, Metric] = {m.name: m for m in (
    Metric("auc", True, "AUC", "val_auc"),
    Metric("accuracy", True, "accuracy", "val_acc"),
)}


@dataclass(frozen=True)
class Kind:
    """A task kind: the metrics that can score it (the first is train.metric: auto's)."""

    name: str
    metrics: Tuple[str, ...]


KINDS: Dict[str, Kind] = {k.name: k for k in (
    Kind("binary", ("auc",)),
    Kind("multiclass", ("accuracy",)),
)}


@dataclass(frozen=True)
class Task:
    """What a run predicts (see the module docstring). `outputs`: the network's outputs (logits); `labels`: the label
    column(s) of the manifest; `classes`: the class names (None: integer labels or no classes); `score_class` /
    `score_index`: train.score_class as given and as a target index (None when unset; the index may be None in a run
    directory read without its manifest); `metric`: a name of METRICS."""

    kind: str
    outputs: int
    labels: Tuple[str, ...] = ("target",)
    classes: Optional[Tuple[str, ...]] = None
    score_class: Optional[str] = None
    score_index: Optional[int] = None
    metric: str = "auc"

    @property
    def one_logit(self) -> bool:
        """One sigmoid output scored as a probability of the positive class (a binary target)."""
        return self.kind == "binary"

    @property
    def scored_kind(self) -> str:
        """The kind the predictions are scored as: binary for one class of many (train.score_class), else `kind`."""
        return "binary" if self.score_class is not None else self.kind

    @property
    def scored_binary(self) -> bool:
        """Scored as binary: OOF target 0/1 and prediction the positive probability (binary, or train.score_class)."""
        return self.scored_kind == "binary"

    def scored(self) -> "Task":
        """The task its prediction files are scored (and blended) as: one class of many (train.score_class) as a
        binary task of that class, else itself."""
        if self.score_class is None:
            return self
        return Task(kind="binary", outputs=1, labels=self.labels, metric=self.metric)

    def describe(self) -> str:
        """The task in a few words, e.g. "multiclass, 4 outputs" (in messages comparing runs)."""
        return f"{self.kind}, {self.outputs} output{'s' if self.outputs > 1 else ''}"

    def with_score_index(self, score_index: Optional[int]) -> "Task":
        """This task with train.score_class resolved to `score_index` (a run read without its manifest may lack it)."""
        return replace(self, score_index=score_index)

    @property
    def scoring(self) -> Metric:
        """The CV metric (name, direction, label, validation key)."""
        return METRICS[self.metric]

    def monitor(self, monitor: str = AUTO) -> Tuple[str, str]:
        """(metric key, "max"/"min") that picks the best checkpoint: train.monitor, auto = the task's metric."""
        if monitor == AUTO:
            metric = self.scoring
            return metric.key, "max" if metric.higher_is_better else "min"
        return monitor, ("min" if monitor == "val_loss" else "max")

    def record(self) -> Dict[str, Any]:
        """The task as plain JSON data (state.json "task")."""
        data = asdict(self)
        data["labels"], data["classes"] = list(self.labels), None if self.classes is None else list(self.classes)
        return data

    @classmethod
    def from_record(cls, data: Dict[str, Any]) -> "Task":
        """The Task of a `record()` (KitError naming the kind when it is not one kitpkg knows)."""
        if data.get("kind") not in KINDS:
            raise KitError(f"state.json: task kind {data.get('kind')!r} is not one this kitpkg knows "
                           f"({', '.join(KINDS)}); use the kitpkg version that made the run")
        classes = data.get("classes")
        return cls(kind=data["kind"], outputs=int(data["outputs"]), labels=tuple(data.get("labels") or ("target",)),
                   classes=None if classes is None else tuple(classes), score_class=data.get("score_class"),
                   score_index=data.get("score_index"), metric=data["metric"])


def kind_of_outputs(num_classes: int) -> str:
    """The kind one label column trained with `num_classes` outputs is: binary (one logit) or multiclass."""
    return "binary" if num_classes == 1 else "multiclass"


def make_task(kind: str, outputs: int, labels: Sequence[str] = ("target",), classes: Optional[Sequence[str]] = None,
              score_class: Union[None, int, str] = None, score_index: Optional[int] = None,
              metric: str = AUTO) -> Task:
    """A checked Task: a known kind, a metric that can score what is scored (auto: the first of the kind's)."""
    if kind not in KINDS:
        raise KitError(f"train.task: unknown task {kind!r}; use auto or one of {', '.join(KINDS)}")
    scored = KINDS["binary" if score_class is not None else kind]  # one class of many is scored as binary
    metric = scored.metrics[0] if metric == AUTO else metric
    if metric not in scored.metrics:
        what = f"{scored.name} task" + (" (one class of many: train.score_class)" if score_class is not None else "")
        raise KitError(f"train.metric: {metric!r} cannot score a {what}; use auto or one of "
                       f"{', '.join(scored.metrics)}")
    return Task(kind=kind, outputs=int(outputs), labels=tuple(labels), classes=None if classes is None else
                tuple(classes), score_class=None if score_class is None else str(score_class),
                score_index=score_index, metric=metric)


def task_of_outputs(num_classes: int, score_class: Union[None, int, str] = None, score_index: Optional[int] = None
                    ) -> Task:
    """The task one label column trained with `num_classes` outputs is (binary or multiclass), with train.score_class;
    also the task of a run directory made before state.json recorded one (from its num_classes and
    train.score_class: the class's index is then known only when it was given as one)."""
    if score_index is None and score_class is not None and str(score_class).isdigit():
        score_index = int(score_class)
    return make_task(kind_of_outputs(int(num_classes)), int(num_classes), score_class=score_class,
                     score_index=score_index)


def choose_task(task: str, metric: str, num_classes: int, labels: Sequence[str], classes: Optional[Sequence[str]],
                score_class: Union[None, int, str], score_index: Optional[int]) -> Task:
    """The run's Task from train.task / train.metric (auto: from the number of outputs the label column implies)."""
    kind = kind_of_outputs(num_classes) if task == AUTO else task
    if kind != kind_of_outputs(num_classes) and kind in ("binary", "multiclass"):
        raise KitError(f"train.task: {kind} needs " + ("one output (model.num_classes 1)" if kind == "binary" else
                       "model.num_classes >= 2") + f", here {num_classes}; set train.task: auto or fix "
                       f"model.num_classes")
    return make_task(kind, num_classes, labels, classes, score_class, score_index, metric)
