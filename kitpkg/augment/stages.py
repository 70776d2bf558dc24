"""`data.aug` of a config -> the two named stages: the CPU stage (loader workers) and the GPU stage (the device,
train/gpu_augment.py).

Precedence per stage: an explicit `data.aug.cpu` / `data.aug.gpu` (an empty mapping / list = no stage), else the
preset's (`data.aug.preset`), else -- no preset -- no CPU stage and the flips of the old `hflip`/`vflip`/`transpose`
flags on the device, which is what configs written before `data.aug` existed trained with.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ..errors import KitError
from .cpu import build_cpu_stage
from .gpu import build_gpu_stage
from .presets import load_preset

_FLAGS = ("hflip", "vflip", "transpose")  # the old AugConfig flags, as GPU-stage ops of the same names


class StageSpecs(NamedTuple):
    """The two stages as specs, nothing built: `cpu` (albumentations' serialisation, or None) and `gpu` (a list of
    {name, p, …} ops; empty: none)."""

    cpu: Optional[Dict[str, Any]]
    gpu: List[Dict[str, Any]]


class Stages(NamedTuple):
    """The two stages ready for their users: `cpu` built (the loader workers' callable, or None) and `gpu` as its spec
    (built where it runs, on the device: train/gpu_augment.py)."""

    cpu: Any
    gpu: List[Dict[str, Any]]


def stage_specs(aug: Any) -> StageSpecs:
    """The StageSpecs of an AugConfig after the precedence in the module docstring; nothing is built."""
    preset = load_preset(aug.preset) if aug.preset else None
    off = [name for name in _FLAGS if getattr(aug, name) is False]  # set false; unset (null) is off too
    if off and (preset is not None or aug.gpu is not None):
        raise KitError(f"data.aug.{off[0]}: false only applies without data.aug.preset/data.aug.gpu; leave the op "
                       "out of data.aug.gpu instead")
    cpu = aug.cpu if aug.cpu is not None else (preset.cpu if preset else None)
    if aug.gpu is not None:
        gpu = list(aug.gpu)
    elif preset is not None:
        gpu = list(preset.gpu)
    else:
        gpu = [{"name": name, "p": 0.5} for name in _FLAGS if getattr(aug, name)]
    return StageSpecs(cpu, gpu)


def check_aug(aug: Any) -> None:
    """Build both stages once so a bad transform or op is a one-line KitError at config load (names the key)."""
    specs = stage_specs(aug)
    build_cpu_stage(specs.cpu, key="data.aug.cpu" if aug.cpu is not None else f"data.aug.preset {aug.preset}: cpu")
    build_gpu_stage(specs.gpu, key="data.aug.gpu" if aug.gpu is not None else f"data.aug.preset {aug.preset}: gpu")


def stages_of(config: Any) -> Stages:
    """The Stages of a Config (or its `data.aug`): the CPU stage built, the GPU stage's spec."""
    aug = config.data.aug if hasattr(config, "data") else config
    specs = stage_specs(aug)
    return Stages(build_cpu_stage(specs.cpu), specs.gpu)
