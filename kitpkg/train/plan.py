"""`kitpkg plan`: a few real training steps of a config on this machine, and what they say about the whole CV.

For each image size (the config's, or `--sizes` the shard set has) the kit's own pieces train the first fold for a
few dozen batches after a warm-up (cv.load_inputs, recipe.build_recipe, cv.make_datamodule/make_module,
trainer.build_trainer; Lightning writes into a temporary folder), timed by timing.py's Throughput, then a few
validation batches, the training loader alone (timing.loader_rate) and one full-state checkpoint. projection.py
turns those rates into the time of each fold and of the CV, compared with the session budget (budget.py) and the
platform's output limit. On a GPU the largest batch that fits is searched first, in a spawned child process
(doubling, then bisecting on out-of-memory), so neither this process nor a notebook's holds a CUDA context or a
process group from it. The run directory receives plan.json only (RunDir.plan), which `kitpkg runs` reads to show
the projected fold time beside the actual one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import Config
from ..errors import KitError
from ..rundir import RunDir
from .plan_measure import DEFAULT_STEPS, SEARCH_LIMIT, WARMUP_STEPS, measure, search_batch, uses_gpu
from .projection import FoldShape, Measured, fold_seconds, output_bytes

PLAN_VERSION = 1


@dataclass
class SizePlan:
    """One image size: what was measured, the largest batch that fits, each fold's projected seconds."""

    image_size: int
    config_hash: str  # of the config at this size: `kitpkg runs` matches a run by it
    measured: Optional[Measured] = None
    largest_batch: Optional[int] = None
    batch_search: str = ""  # how the largest batch was found (or why not)
    shapes: List[FoldShape] = field(default_factory=list)
    folds: Dict[int, Dict[str, float]] = field(default_factory=dict)  # {fold: fold_seconds(...)}
    output_bytes: Optional[int] = None
    skipped: Optional[str] = None  # why nothing was measured (the config's batch does not fit)
    workers: int = 1  # folds trained at once: one per GPU where run_cv does that (parallel.gpus_for_folds)

    @property
    def cv_s(self) -> Optional[float]:
        """Projected seconds of the CV: its folds one after the other, or handed in order to `workers` processes
        (each fold to the first one free, as parallel.run_workers does)."""
        if not self.folds:
            return None
        free = [0.0] * max(1, self.workers)
        for k in sorted(self.folds):
            free[free.index(min(free))] += self.folds[k]["total"]
        return max(free)

    @property
    def fold_s(self) -> Optional[float]:
        """Projected seconds of a fold (mean over the folds)."""
        return sum(f["total"] for f in self.folds.values()) / len(self.folds) if self.folds else None

    def to_json(self) -> Dict[str, Any]:
        """plan.json's entry of this size."""
        measured = None if self.measured is None else dataclasses.asdict(self.measured)
        return {"config_hash": self.config_hash, "measured": measured,
                "largest_batch": self.largest_batch, "batch_search": self.batch_search,
                "folds": {str(k): v for k, v in self.folds.items()}, "fold_s": self.fold_s, "cv_s": self.cv_s,
                "output_bytes": self.output_bytes, "skipped": self.skipped, "workers": self.workers}


@dataclass
class Plan:
    """`kitpkg plan`'s result: one SizePlan per image size, and the budget they are held against."""

    config: Config
    sizes: Dict[int, SizePlan]
    session_limit_s: Optional[float]
    output_limit_bytes: Optional[int]

    def to_json(self) -> Dict[str, Any]:
        """plan.json: the figures per size, keyed by the config hash they were measured for."""
        from ..config import config_hash

        return {"kitpkg_plan": PLAN_VERSION, "config_hash": config_hash(self.config),
                "image_size": self.config.data.image_size, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "epochs": self.config.train.epochs, "session_limit_s": self.session_limit_s,
                "output_limit_bytes": self.output_limit_bytes,
                "sizes": {str(s): p.to_json() for s, p in self.sizes.items()}}

    def summary(self) -> str:
        """The printed figures: a block per size (plan_text.py), then one line per size when several."""
        from .plan_text import plan_lines

        return "\n".join(plan_lines(self))


def run_plan(config: Config, run_dir: Optional[os.PathLike] = None, sizes: Optional[Sequence[int]] = None,
             steps: int = DEFAULT_STEPS, warmup: int = WARMUP_STEPS) -> Plan:
    """Measure `config` at each of `sizes` (default: data.image_size), project its CV, write plan.json; the Plan."""
    from .cv import fold_selection
    from .inputs import load_inputs

    if steps < 2:
        raise KitError(f"--steps: must be >= 2, got {steps}")
    chosen = list(dict.fromkeys(sizes or [config.data.image_size]))
    check_sizes(config, chosen)
    limit_s, limit_bytes = budget_limits(config)
    plans: Dict[int, SizePlan] = {}
    for size in chosen:
        sized = at_size(config, size)
        inputs = load_inputs(sized)
        folds = fold_selection(sized, inputs)[0]
        plans[size] = plan_size(sized, inputs, folds, steps, warmup)
    plan = Plan(config, plans, limit_s, limit_bytes)
    write_plan(plan, run_dir or config.output.run_dir)
    return plan


def plan_size(config: Config, inputs: Any, folds: Sequence[int], steps: int, warmup: int) -> SizePlan:
    """One size: the batch-size search (GPU), the measurement on the first fold, each fold's projection."""
    from ..config import config_hash

    from .parallel import gpus_for_folds

    plan = SizePlan(config.data.image_size, config_hash(config), shapes=[fold_shape(config, inputs, k) for k in folds],
                    workers=max(1, gpus_for_folds(config)))
    if not uses_gpu(config):
        plan.batch_search = ("not searched on the CPU: its limit is the machine's RAM, and a batch too large "
                             "swaps rather than failing")
    else:
        from .child import call_in_child

        print(f"kitpkg plan: {config.data.image_size} px: searching the largest batch that fits (child process)",
              flush=True)
        plan.largest_batch, at_limit = call_in_child(search_batch, config, folds[0], SEARCH_LIMIT)
        plan.batch_search = (f">= {SEARCH_LIMIT} (the search stops there)" if at_limit else
                             "none: not even a batch of 1" if plan.largest_batch is None else
                             "searched in a child process (doubling, then bisecting to within an eighth)")
        if plan.largest_batch is None or plan.largest_batch < config.data.batch_size:
            plan.skipped = (f"data.batch_size {config.data.batch_size} does not fit at {config.data.image_size} px "
                            f"(largest: {plan.largest_batch or 'none'}); lower data.batch_size or the image size")
            return plan
    print(f"kitpkg plan: {config.data.image_size} px: {warmup} warm-up + {steps} timed training steps on fold "
          f"{folds[0]}", flush=True)
    plan.measured = measure(config, inputs, folds[0], steps, warmup)
    views, world = 1 + len(config.predict.tta), world_size(config)
    train = config.train
    plan.folds = {s.fold: fold_seconds(plan.measured, s, train.epochs, views, train.accumulate,
                                       train.checkpoint_every_n_steps, world) for s in plan.shapes}
    plan.output_bytes = output_bytes(plan.measured, len(folds), kept_checkpoints(config))
    return plan


# -- sizes, budget, devices -------------------------------------------------------------------------------------------
def available_sizes(config: Config) -> List[int]:
    """The image sizes the shard set has: the OUT/<size>/ folders `kitpkg convert` writes under data.shards (a
    single manifest folder: data.image_size alone)."""
    from ..shards.manifest import manifest_paths

    paths = manifest_paths(config.data.shards)
    found = [int(Path(p).name) for p in paths if p != config.data.shards and Path(p).name.isdigit()]
    return found or [config.data.image_size]


def check_sizes(config: Config, sizes: Sequence[int]) -> None:
    """KitError naming the sizes the shard set lacks and those it has."""
    have = available_sizes(config)
    missing = [s for s in sizes if s not in have]
    if missing:
        raise KitError(f"--sizes: {', '.join(map(str, missing))} px not in the shard set {config.data.shards} (it "
                       f"has {', '.join(map(str, have))}); convert with `kitpkg convert ... --size "
                       f"{missing[0]}` or pick from those")


def at_size(config: Config, size: int) -> Config:
    """`config` with data.image_size = `size`."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=int(size)))


def budget_limits(config: Config) -> Tuple[Optional[float], Optional[int]]:
    """(seconds left in this session, the run directory's byte limit) from budget.py (None: no such limit)."""
    from . import budget

    return budget.session_limit_s(config), budget.output_limit_bytes()


def world_size(config: Config) -> int:
    """Devices a fold trains on (train.devices; auto: one)."""
    return config.train.devices if isinstance(config.train.devices, int) else 1


def kept_checkpoints(config: Config) -> int:
    """Resumable checkpoints a fold keeps (RunCheckpoints' rule for train.keep_checkpoints)."""
    from .checkpoint import RunCheckpoints

    return RunCheckpoints(Path("."), config.train.checkpoint_every_n_steps, config.train.keep_checkpoints, "").keep


def fold_shape(config: Config, inputs: Any, k: int) -> FoldShape:
    """Fold k's sizes: its training epoch as the loader makes it (oversampled by data.sampling.class_weights, one
    rank), its validation and test samples."""
    from ..data.dataset import ShardDataset, TrainOptions
    from .predict import fold_ids

    train = ShardDataset(inputs.manifest, "train", k, extra=inputs.extras_for(k), batch_size=config.data.batch_size,
                         train_options=TrainOptions(class_weights=config.data.sampling.class_weights),
                         world_size=1, rank=0)
    return FoldShape(k, train.epoch_samples, train.partition.total, len(train),
                     len(fold_ids(inputs.manifest, "val", k)), len(fold_ids(inputs.manifest, "test")))


def write_plan(plan: Plan, run_dir: os.PathLike) -> Path:
    """plan.json into the run directory (atomically; nothing else is written there)."""
    from ..fsutil import atomic_write_text
    from .runstate import run_directory

    folder = run_directory(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = RunDir(folder).plan
    atomic_write_text(path, json.dumps(plan.to_json(), indent=1))
    return path
