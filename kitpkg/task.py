"""What a run predicts and how it is scored: the `Task`, one home for every decision that depends on the kind of target.

A Task says: the kind (binary, multiclass, multilabel, regression, ordinal, soft), the label column(s), the
class names, how many outputs the network has, which class `train.score_class` scores, and the metric (a name and its
direction). The torch side of a task (activation, loss, validation metric) lives in kitpkg/train/outputs.py and
losses.py; the columns of its OOF and test prediction files in kitpkg/predictions.py. A run records its task in
state.json ("task"); a run directory made before that is read with the task its num_classes and train.score_class imply
(`task_of_outputs`). Adding a task kind is one entry in `KINDS` (and its torch side in outputs.py); a metric one entry
in kitpkg/metrics.py's registry (the one home of metrics: `Task.metric` holds the `train.metric` spec, `Task.scorer()`
its registry `Metric`, `Task.scoring` the view of it tables, monitors and reports use).

Kinds today:
  binary      one 0/1 column, one logit (sigmoid); scored by AUC; submits P(positive)
  multiclass  one class column, one logit per class (softmax); scored by accuracy; submits the class index
  multiclass + score_class   trained on every class, scored (AUC) and submitted as one class's probability
  multilabel  several 0/1 columns, one sigmoid output each; BCE (or focal) per column; scored by mean AUC over the
              labels; refuses mixup, score_class and class weights
  ordinal     one column of classes in order (integers 0..C-1, or text classes in sorted order), one output regressing
              the class index (trained as a regression: standardised, mse / smooth_l1 / l1); OOF keeps the value and
              the class it rounds to (k - 0.5 cuts, clipped); scored by QWK (or rmse, mae); submits the class
  soft        a target distribution over classes given by several columns (rows summing to 1), one softmax output per
              column; KL divergence (or soft cross-entropy) to it; scored by KL; submits one probability per column
  regression  one or more float columns, one output each (no activation); mse / smooth_l1 / l1 on targets
              standardised by the fold's training rows (recipe.target_scale), predictions back in the CSV's units;
              scored by RMSE (or MAE); refuses the settings of classes (mixup, label smoothing, pos_weight, class
              weights, score_class)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from .errors import KitError

AUTO = "auto"


MetricSpec = Union[str, Dict[str, Any]]  # a train.metric value: a name, {name: ..., params}, or file.py:function


@dataclass(frozen=True)
class Metric:
    """A view of a registry metric (kitpkg/metrics.py): its name, direction, its name in tables and reports, and its
    logged validation key."""

    name: str
    higher_is_better: bool
    label: str  # in tables and reports ("AUC")
    key: str  # the validation key logged per epoch and monitored ("val_auc")

    @property
    def mode(self) -> str:
        """Lightning's mode (ModelCheckpoint, EarlyStopping): max when higher is better, else min."""
        return "max" if self.higher_is_better else "min"


@dataclass(frozen=True)
class Kind:
    """A task kind: the losses that train it (the first is train.loss: auto's), whether its predictions are
    probabilities, and the settings that make no sense for it (refused by name: `refused_setting`). The metrics that
    score it are the registry's (kitpkg.metrics.metrics_for; train.metric auto: default_metric)."""

    name: str
    losses: Tuple[str, ...]
    probabilities: bool = True
    refuses: Tuple[str, ...] = ()
    per_label: bool = False  # one output, target and prediction column per label column


# settings that only mean something for classes (refused by the kinds that list them)
_CLASS_SETTINGS = ("train.mixup", "train.label_smoothing", "train.pos_weight", "data.sampling.class_weights",
                   "train.score_class")

KINDS: Dict[str, Kind] = {k.name: k for k in (
    Kind("binary", ("bce", "focal")),
    Kind("multiclass", ("ce", "focal")),
    Kind("regression", ("mse", "smooth_l1", "l1"), probabilities=False, refuses=_CLASS_SETTINGS,
         per_label=True),
    Kind("multilabel", ("bce", "focal"), refuses=("train.mixup", "train.score_class",
                                                                  "data.sampling.class_weights"), per_label=True),
    Kind("ordinal", ("mse", "smooth_l1", "l1"), probabilities=False,
         refuses=_CLASS_SETTINGS),
    Kind("soft", ("kl", "soft_ce"), refuses=_CLASS_SETTINGS, per_label=True),
)}


@dataclass(frozen=True)
class Task:
    """What a run predicts (see the module docstring). `outputs`: the network's outputs (logits); `labels`: the label
    column(s) of the manifest; `classes`: the class names (None: integer labels or no classes); `score_class` /
    `score_index`: train.score_class as given and as a target index (None when unset; the index may be None in a run
    directory read without its manifest); `metric`: the train.metric spec (a registry name, a mapping of a name and
    its parameters, or a user's metric file by absolute path: see `resolve_metric`)."""

    kind: str
    outputs: int
    labels: Tuple[str, ...] = ("target",)
    classes: Optional[Tuple[str, ...]] = None
    score_class: Optional[str] = None
    score_index: Optional[int] = None
    metric: MetricSpec = "auc"

    @property
    def probabilities(self) -> bool:
        """Whether the predictions are probabilities (else values in the CSV's units: regression)."""
        return KINDS[self.kind].probabilities

    @property
    def num_classes(self) -> int:
        """How many classes the targets index (`classes`; else the outputs): an ordinal task has one output."""
        return len(self.classes) if self.classes else self.outputs

    @property
    def per_label(self) -> bool:
        """One output per label column, each with its own target and prediction column (regression, multilabel)."""
        return KINDS[self.kind].per_label

    @property
    def sigmoid(self) -> bool:
        """Independent sigmoid outputs: one logit (binary) or one per label (multilabel)."""
        return self.kind in ("binary", "multilabel")

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
    def metric_kind(self) -> str:
        """The kind the registry scores this task's prediction files as (train.score_class: score_class)."""
        return "score_class" if self.score_class is not None else self.kind

    def scorer(self) -> Any:
        """The registry's `kitpkg.metrics.Metric` of `metric` (built once per Task: a user's file is imported once)."""
        cached = self.__dict__.get("_scorer")
        if cached is None:
            from .metrics import metric_from_spec

            cached = metric_from_spec(self.metric, ".", self.metric_kind, num_classes=self.num_classes)
            object.__setattr__(self, "_scorer", cached)
        return cached

    @property
    def scoring(self) -> Metric:
        """The CV metric (name, direction, label, validation key): a view of the registry's."""
        from .metrics import metric_key, metric_label

        scorer = self.scorer()
        return Metric(scorer.name, scorer.higher_is_better, metric_label(scorer.name), metric_key(scorer.name))

    def monitor(self, monitor: str = AUTO) -> Tuple[str, str]:
        """(metric key, "max"/"min") that picks the best checkpoint and stops early: train.monitor, auto = the task's
        metric in its direction, or val_loss (minimised); KitError for any other key (a run logs only those two)."""
        if monitor == AUTO or monitor == self.scoring.key:
            return self.scoring.key, self.scoring.mode
        if monitor == "val_loss":
            return monitor, "min"
        raise KitError(f"train.monitor: {monitor} is not logged by this run (it logs val_loss and {self.scoring.key}, "
                       f"train.metric's); use auto, val_loss, or set train.metric to the metric you want")

    def __getstate__(self) -> Dict[str, Any]:  # the cached scorer is rebuilt where the Task is unpickled
        return {k: v for k, v in self.__dict__.items() if k != "_scorer"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def record(self) -> Dict[str, Any]:
        """The task as plain JSON data (state.json "task")."""
        data = asdict(self)
        data["labels"], data["classes"] = list(self.labels), None if self.classes is None else list(self.classes)
        data["metric"] = dict(self.metric) if isinstance(self.metric, Mapping) else self.metric
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
              metric: Any = AUTO, base_dir: Union[None, str, Path] = None) -> Task:
    """A checked Task: a known kind, a metric of the registry that can score what is scored (auto: the kind's
    default; a user's metric file resolved against `base_dir`, the config's folder). KitError naming train.metric."""
    if kind not in KINDS:
        raise KitError(f"train.task: unknown task {kind!r}; use auto or one of {', '.join(KINDS)}")
    if score_class is not None and "train.score_class" in KINDS[kind].refuses:
        raise KitError(f"train.score_class: makes no sense for a {kind} task; remove it")
    task = Task(kind=kind, outputs=int(outputs), labels=tuple(labels), classes=None if classes is None else
                tuple(classes), score_class=None if score_class is None else str(score_class),
                score_index=score_index)
    task = replace(task, metric=resolve_metric(metric, task.metric_kind, base_dir))
    task.scorer()  # refuses a metric the kind cannot use (and a user's file that cannot be loaded), one line
    return task


def resolve_metric(metric: Any, metric_kind: str, base_dir: Union[None, str, Path]) -> MetricSpec:
    """The spec a Task keeps of a train.metric value: auto -> the kind's default name; a user's metric file's path made
    absolute (relative to `base_dir`, the config's folder), so the run reads it from wherever it is opened."""
    from .metrics import default_metric, is_metric_file

    if metric in (AUTO, None):
        return default_metric(metric_kind)
    name = metric.get("name") if isinstance(metric, Mapping) else metric
    if isinstance(name, str) and is_metric_file(name):
        file, sep, function = name.strip().partition(":")
        path = (Path(base_dir or ".") / file).resolve()
        name = f"{path}{sep}{function}"
        return {**metric, "name": name} if isinstance(metric, Mapping) else name
    return dict(metric) if isinstance(metric, Mapping) else metric


def task_of_outputs(num_classes: int, score_class: Union[None, int, str] = None, score_index: Optional[int] = None
                    ) -> Task:
    """The task one label column trained with `num_classes` outputs is (binary or multiclass), with train.score_class;
    also the task of a run directory made before state.json recorded one (from its num_classes and
    train.score_class: the class's index is then known only when it was given as one)."""
    if score_index is None and score_class is not None and str(score_class).isdigit():
        score_index = int(score_class)
    return make_task(kind_of_outputs(int(num_classes)), int(num_classes), score_class=score_class,
                     score_index=score_index)


def choose_task(task: str, metric: Any, num_classes: int, labels: Sequence[str], classes: Optional[Sequence[str]],
                score_class: Union[None, int, str], score_index: Optional[int],
                base_dir: Union[None, str, Path] = None) -> Task:
    """The run's Task of kind `task` (auto: binary or multiclass by the number of outputs one label column implies)
    and train.metric."""
    kind = kind_of_outputs(num_classes) if task == AUTO else task
    if kind != kind_of_outputs(num_classes) and kind in ("binary", "multiclass"):
        raise KitError(f"train.task: {kind} needs " + ("one output (model.num_classes 1)" if kind == "binary" else
                       "model.num_classes >= 2") + f", here {num_classes}; set train.task: auto or fix "
                       f"model.num_classes")
    return make_task(kind, num_classes, labels, classes, score_class, score_index, metric, base_dir)


def infer_kind(label_columns: Sequence[str], has_classes: bool) -> Tuple[str, str]:
    """(kind, why) that train.task: auto picks from the manifest: one column of classes (0/1, text, integers) ->
    binary or multiclass (by its classes: see cv.load_inputs), one fractional float column or several numeric ones ->
    regression, several 0/1 columns -> multilabel. `has_classes`: the manifest counted classes (or 0/1 positives)."""
    cols = ", ".join(label_columns)
    if len(label_columns) <= 1:
        if has_classes:
            return "classes", f"the label column {cols} holds classes"
        return "regression", f"the label column {cols} holds fractional floats"
    if has_classes:
        return "multilabel", f"the label columns {cols} are all 0/1"
    return "regression", f"the label columns {cols} hold numbers"


def refused_setting(task: Task, values: Dict[str, Any]) -> Optional[str]:
    """The first setting of {dotted key: value} the task's kind refuses that is set (not null, 0 or empty), as a
    one-line reason; None when every one is fine."""
    for key in KINDS[task.kind].refuses:
        given = [v for k, v in values.items() if k == key or k.startswith(key + ".")]  # a section: any of its keys
        if any(v not in (None, 0, 0.0, {}, [], False) for v in given):
            return f"{key}: makes no sense for a {task.kind} task ({task.describe()}); remove it"
    return None
