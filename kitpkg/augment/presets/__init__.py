"""Augmentation presets shipped as files beside this module (NAME.yaml), each with a `cpu:` and a `gpu:` stage.

`data.aug.preset: NAME` reads NAME.yaml; a user can also copy one into a config and edit it.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, List, Optional

import yaml

from ...errors import KitError


@dataclass(frozen=True)
class Preset:
    """A preset's two stages as specs: `cpu` for build_cpu_stage (A.to_dict format), `gpu` for build_gpu_stage."""

    name: str
    cpu: Optional[Dict[str, Any]]
    gpu: List[Dict[str, Any]]


def preset_names() -> List[str]:
    """The names of the presets shipped with kitpkg."""
    folder = resources.files(__name__)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str, key: str = "data.aug.preset") -> Preset:
    """The shipped preset `name`; an unknown name is a KitError listing the known ones."""
    known = preset_names()
    if name not in known:
        raise KitError(f"{key}: unknown augmentation preset {name!r}; known: {', '.join(known)}")
    data = yaml.safe_load((resources.files(__name__) / f"{name}.yaml").read_text())
    return Preset(name, data.get("cpu") or None, list(data.get("gpu") or []))
