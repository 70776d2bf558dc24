"""The run directory's state.json: config hash, shard fingerprints, finished folds -- written atomically by rank 0.

A run directory holds no absolute paths (it moves from Colab to Kaggle); the shard sets are identified by a fingerprint
of their manifest content instead of their location.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..config import Config, config_hash, diff_keys, result_dict
from ..errors import KitError
from ..fsutil import atomic_write_text
from ..shards.manifest import Manifest

STATE_NAME = "state.json"
STATE_VERSION = 1


def manifest_fingerprint(manifest: Manifest) -> str:
    """sha256 over what a manifest's samples are (files, splits, folds, counts, checksums, label column, size)."""
    parts = [(s.file, s.split, s.fold, s.samples, s.sha256) for s in manifest.shards]
    text = json.dumps([manifest.label_col, manifest.image_size, parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def is_rank_zero() -> bool:
    """True in the process that writes shared files (rank 0, or the only process)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class RunState:
    """state.json of one run directory."""

    def __init__(self, run_dir: Path, data: Dict[str, Any]):
        self.run_dir, self.data = Path(run_dir), data

    @property
    def path(self) -> Path:
        """Where state.json lives."""
        return self.run_dir / STATE_NAME

    @classmethod
    def open(cls, run_dir: Path, config: Config, fingerprints: Dict[str, Any], allow_changed: Sequence[str] = ()
             ) -> "RunState":
        """Load the run's state (or start one); refuse a config or shard set that differs from the run's."""
        run_dir = Path(run_dir)
        path = run_dir / STATE_NAME
        current = result_dict(config)
        if not path.exists():
            state = cls(run_dir, {"kitpkg_state": STATE_VERSION, "config_hash": config_hash(config),
                                  "config": current, "data": fingerprints, "folds": {}})
            state.save()
            return state
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise KitError(f"{path}: unreadable run state ({err}); use another output.run_dir") from None
        state = cls(run_dir, data)
        changed = [line for line in diff_keys(data.get("config", {}), current)
                   if not any(line.startswith(prefix) for prefix in allow_changed)]
        if changed:
            raise KitError(f"{run_dir} was run with another config ({'; '.join(changed)}); restore those values, or "
                           f"set output.run_dir to a new folder for a new experiment")
        for key, value in fingerprints.items():
            if data.get("data", {}).get(key) != value:
                raise KitError(f"{run_dir} was run on other data ({key} differs from the run's); point data.shards/"
                               f"data.extra_train at the same shard sets, or use a new output.run_dir")
        return state

    def save(self) -> None:
        """Write state.json atomically (rank 0 only)."""
        if is_rank_zero():
            atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def fold(self, k: int) -> Dict[str, Any]:
        """The record of fold k (empty when not started)."""
        return self.data["folds"].get(str(k), {})

    def is_done(self, k: int) -> bool:
        """True when fold k finished training and its predictions are written."""
        return self.fold(k).get("status") == "done"

    def update_fold(self, k: int, **fields: Any) -> None:
        """Merge fields into fold k's record and save."""
        self.data["folds"].setdefault(str(k), {}).update(fields)
        self.save()

    def done_folds(self) -> List[int]:
        """Sorted finished folds."""
        return sorted(int(k) for k, v in self.data["folds"].items() if v.get("status") == "done")

    def set(self, key: str, value: Any) -> None:
        """Set a top-level entry and save."""
        self.data[key] = value
        self.save()

    def get(self, key: str, default: Optional[Any] = None) -> Any:
        """A top-level entry."""
        return self.data.get(key, default)


def relpath(path: Path, run_dir: Path) -> str:
    """`path` relative to the run dir (so the run dir stays movable)."""
    return os.path.relpath(path, run_dir)
