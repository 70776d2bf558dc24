"""What a run trains on: its shard sets (the manifest, extra and per-fold pseudo-label sets), the Task the label
columns and train.task/metric/score_class make, and their fingerprints in state.json (`load_inputs(config)`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import Config
from ..errors import KitError
from ..shards.manifest import Manifest, load_manifest, resolve_manifest_path
from ..task import AUTO, Task, choose_task, infer_kind, kind_of_outputs, task_of_outputs
from .runstate import is_rank_zero, manifest_fingerprint


@dataclass
class RunInputs:
    """What a run trains on: its shard sets and what they imply (the `data.*` keys say where they are; state.json
    records their fingerprints)."""

    manifest: Manifest
    extras: List[Manifest]
    num_classes: int
    score_index: Optional[int] = None  # train.score_class as a target index (scoring.py)
    init_source: Optional[str] = None  # config hash of the model.init_from run (init_from.py)
    fold_sets: List[Any] = field(default_factory=list)  # per-fold pseudo-label sets (extras.py: FoldSets)
    task: Optional[Task] = None  # what the run predicts (None: the one num_classes and score_index imply)

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = task_of_outputs(self.num_classes, self.score_index, self.score_index)

    def fingerprints(self) -> Dict[str, Any]:
        """What state.json records to recognise these shard sets (and the model.init_from run) wherever they are
        mounted."""
        prints = {"manifest": manifest_fingerprint(self.manifest), "num_classes": self.num_classes,
                  "extra_train": [manifest_fingerprint(m) for m in self.extras]
                  + [sets.fingerprint() for sets in self.fold_sets]}
        return {**prints, "init_from": self.init_source} if self.init_source else prints

    def extras_for(self, fold: Optional[int]) -> List[Manifest]:
        """The extra training sets of `fold`: every-fold sets, plus its own set of each per-fold pseudo-label set
        (None, no fold: the every-fold sets only)."""
        return self.extras + ([] if fold is None else [sets.for_fold(fold) for sets in self.fold_sets])


def load_inputs(config: Config) -> RunInputs:
    """Load the config's manifest (for data.image_size) and extra training sets; infer num_classes."""
    from .extras import check_soft_sets, is_fold_sets, load_extras
    from .init_from import source_identity

    pseudo = is_fold_sets(config.data.shards, config.data.image_size)  # per-fold sets: no manifest at the top
    manifest = None if pseudo else load_manifest(resolve_manifest_path(config.data.shards, config.data.image_size))
    if manifest is None or manifest.options.get("pseudo"):
        raise KitError(f"data.shards: {config.data.shards} is a pseudo-label set; add it under data.extra_train "
                       "(training only), never as the validation data")
    if not manifest.label_columns():
        raise KitError(f"data.shards: {manifest.root} has no label column; convert with --label-col")
    extras, fold_sets = load_extras(config.data.extra_train, config.data.image_size, manifest)
    task = _run_task(config, manifest)
    check_soft_sets(task.kind, extras, fold_sets)
    num_classes, score_index = task.outputs, task.score_index
    return RunInputs(manifest, extras, num_classes, score_index, source_identity(config.model.init_from), fold_sets,
                     task)


def _run_task(config: Config, manifest: Manifest) -> Task:
    """The run's Task: train.task (auto: inferred from the manifest's label columns, said in one line unless the
    kind is binary or multiclass as always) with train.metric, train.score_class and model.num_classes."""
    from .scoring import score_class_index

    labels = manifest.label_columns()
    kind, why = (config.train.task, None) if config.train.task != AUTO else \
        infer_kind(labels, bool(manifest.class_counts))
    if kind in ("classes", "binary", "multiclass"):
        num_classes = config.model.num_classes or infer_classes(manifest)
        kind = kind_of_outputs(num_classes) if kind == "classes" else kind
        score_index = score_class_index(config.train.score_class, manifest.classes(), num_classes, manifest.root)
        return choose_task(kind, config.train.metric, num_classes, labels, manifest.classes(),
                           config.train.score_class, score_index, metric_dir(config))
    if why is not None and is_rank_zero():
        print(f"kitpkg: train.task auto -> {kind}: {why} (set train.task to choose)", flush=True)
    if kind == "ordinal":
        return choose_task(kind, config.train.metric, 1, labels, _ordinal_classes(manifest), None, None,
                           metric_dir(config))
    return choose_task(kind, config.train.metric, config.model.num_classes or len(labels), labels, None,
                       config.train.score_class, None, metric_dir(config))


def metric_dir(config: Config) -> Path:
    """The folder a train.metric file is relative to: the config's (the working directory for a config not read
    from a file)."""
    return Path(config.source).parent if config.source else Path(".")


def _ordinal_classes(manifest: Manifest) -> List[str]:
    """The classes of an ordinal label column in order: text classes sorted, or the integers 0..max."""
    if manifest.class_column() is None:
        raise KitError(f"train.task: ordinal needs one label column of classes; {manifest.root} has "
                       f"{', '.join(manifest.label_columns())}")
    names = manifest.classes()
    if names is not None:
        return names
    values = [float(v) for v in manifest.class_counts]
    if any(v < 0 or v != int(v) for v in values):
        raise KitError(f"train.task: ordinal needs class indices 0, 1, 2, ... or text classes; {manifest.root}'s "
                       f"labels are {', '.join(sorted(map(str, manifest.class_counts)))}")
    return [str(i) for i in range(int(max(values)) + 1)]


def infer_classes(manifest: Manifest) -> int:
    """1 (binary: one logit) for two text classes or labels valued 0/1 (ints, floats, bools); else the class count."""
    names = manifest.classes()  # text labels, e.g. benign/malignant: see Manifest.classes for which is positive
    labels = set(manifest.class_counts) if names is None else set(names)
    if not labels:
        raise KitError("model.num_classes: the manifest has no class counts; set model.num_classes (1 = binary)")
    if (names is not None and len(names) == 2) or labels <= {"0", "1", "0.0", "1.0", "False", "True"}:
        return 1
    return len(labels)
