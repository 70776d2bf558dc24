"""`data.aug` of a config -> the two stages: the built CPU stage (loader workers) and the GPU stage's spec (the model).

Precedence per stage: an explicit `data.aug.cpu` / `data.aug.gpu` (an empty mapping / list = no stage), else the
preset's (`data.aug.preset`), else -- no preset -- no CPU stage and the flips of the old `hflip`/`vflip`/`transpose`
flags on the device, which is what configs written before `data.aug` existed trained with.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..errors import KitError
from .cpu import build_cpu_stage
from .gpu import build_gpu_stage
from .presets import load_preset

_FLAGS = ("hflip", "vflip", "transpose")  # the old AugConfig flags, as GPU-stage ops of the same names


def stage_specs(aug: Any) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """(cpu spec, gpu spec) of an AugConfig after the precedence in the module docstring; nothing is built."""
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
    return cpu, gpu


def check_aug(aug: Any) -> None:
    """Build both stages once so a bad transform or op is a one-line KitError at config load (names the key)."""
    cpu, gpu = stage_specs(aug)
    build_cpu_stage(cpu, key="data.aug.cpu" if aug.cpu is not None else f"data.aug.preset {aug.preset}: cpu")
    build_gpu_stage(gpu, key="data.aug.gpu" if aug.gpu is not None else f"data.aug.preset {aug.preset}: gpu")


def stages_of(config: Any) -> Tuple[Any, List[Dict[str, Any]]]:
    """(built CPU stage or None, GPU stage spec for `build_gpu_stage`) of a Config (or its `data.aug`)."""
    aug = config.data.aug if hasattr(config, "data") else config
    cpu, gpu = stage_specs(aug)
    return build_cpu_stage(cpu), gpu
