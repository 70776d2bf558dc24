"""The experiment templates shipped with the kit (one YAML each); `kitpkg init --from NAME` writes one out."""
from __future__ import annotations

from pathlib import Path
from typing import List

from ..errors import KitError

FOLDER = Path(__file__).resolve().parent


def template_names() -> List[str]:
    """Names of the shipped templates (file stems), sorted."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def template_path(name: str) -> Path:
    """The shipped template `name` (e.g. "demo"); KitError listing the choices when there is none."""
    path = FOLDER / f"{name}.yaml"
    if not path.is_file():
        raise KitError(f"--from {name}: no such template; choose one of {', '.join(template_names())}")
    return path
