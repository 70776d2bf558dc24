"""A run directory's state: state.json (run level, written once) and folds/fold{k}.json (one file per fold).

Where those files live, and the records they hold (FoldRecord, CVSummary), is kitpkg/rundir.py's; this module reads
and writes them.

state.json holds what identifies the run -- config hash and result keys, shard fingerprints -- and is written when the
run starts (later only for run-level facts: where the shards were last seen, the merged CV summary). Fold progress
never touches it: each fold's status lives in its own folds/fold{k}.json, written atomically (temp name, rename) by
the one process training that fold (rank 0 of it). So two `kitpkg cv --folds` processes on one run directory -- on one
machine or on two sharing a mounted Drive folder -- never overwrite each other's finished folds, and no file lock is
needed (Drive has none). A run directory of the earlier single-file layout (folds inside state.json) is migrated when
it is opened.

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
from ..rundir import STATE_NAME, CVSummary, FoldRecord, RunDir
from ..shards.manifest import Manifest
from ..task import Task, task_of_outputs

STATE_VERSION = 2  # 1: fold records inside state.json (migrated on open)
TASK_KEY = "task"  # state.json's record of the run's Task (absent in run directories made before it)
_KEPT_STATUS = ("trained", "done")  # a fold in one of these holds work that a changed config would throw away


def manifest_fingerprint(manifest: Manifest) -> str:
    """sha256 over what a manifest's samples are (files, splits, folds, counts, checksums, label column, size)."""
    parts = [(s.file, s.split, s.fold, s.samples, s.sha256) for s in manifest.shards]
    text = json.dumps([manifest.label_col, manifest.image_size, parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def is_rank_zero() -> bool:
    """True in the process that writes shared files (rank 0, or the only process)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run_directory(path: os.PathLike) -> Path:
    """`path` as a run directory: refused (KitError) when it exists as something other than a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KitError(f"{path}: the run directory is a file; point --run-dir (or output.run_dir) at a folder")
    return path


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON object in `path` (None when absent); KitError naming the file when it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise KitError(f"{path}: unreadable run state ({err}); delete it (a fold file: that fold is retrained) or "
                       f"use another output.run_dir") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: unreadable run state (not a JSON object); delete it or use another output.run_dir")
    return data


class RunState:
    """The state of one run directory: run-level entries (state.json) and one record per fold (folds/fold{k}.json).

    Fold records are read from disk on every call, so a fold another process finished is seen at once.
    """

    def __init__(self, run_dir: Path, entries: Dict[str, Any]):
        self.run_dir, self.entries = Path(run_dir), entries
        self.paths = RunDir(self.run_dir)

    @property
    def path(self) -> Path:
        """Where state.json lives."""
        return self.paths.state

    def fold_path(self, k: int) -> Path:
        """Where fold k's record lives."""
        return self.paths.fold_record(k)

    @classmethod
    def read(cls, run_dir: os.PathLike) -> "RunState":
        """The state of an existing run directory, read as it is (no config check, nothing written)."""
        run_dir = run_directory(run_dir)
        data = _read_json(RunDir(run_dir).state)
        if data is None:
            raise KitError(f"{run_dir}: no {STATE_NAME} here; is it a run directory of `kitpkg cv`?")
        return cls(run_dir, data)

    @classmethod
    def open(cls, run_dir: Path, config: Config, fingerprints: Dict[str, Any], allow_changed: Sequence[str] = (),
             task: Optional[Task] = None) -> "RunState":
        """Load the run's state (or start one); refuse a config or shard set that differs from a run with work in it.

        A run directory whose folds hold nothing yet (no checkpoint, no trained fold: e.g. a first run that failed
        before its first checkpoint) is restarted with the new config instead: there is nothing to lose. `task`: the
        run's task, recorded in state.json (a run directory made before it was recorded gets it on open).
        """
        run_dir = run_directory(run_dir)
        data = _read_json(RunDir(run_dir).state)
        fresh = {"kitpkg_state": STATE_VERSION, "config_hash": config_hash(config), "config": result_dict(config),
                 "data": fingerprints, **({TASK_KEY: task.record()} if task is not None else {})}
        if data is None:
            return cls._start(run_dir, fresh)
        state = cls(run_dir, data)
        state._migrate()
        problem = state.mismatch(config, fingerprints, allow_changed)
        if problem is None:
            if task is not None and TASK_KEY not in state.entries:
                state.set(TASK_KEY, task.record())  # made before runs recorded their task: the same one, now named
            return state
        if not state.has_work():
            state._clear_folds()
            return cls._start(run_dir, {**fresh, **({"shards": data["shards"]} if "shards" in data else {})})
        raise KitError(problem)

    @classmethod
    def _start(cls, run_dir: Path, data: Dict[str, Any]) -> "RunState":
        state = cls(run_dir, data)
        state.save()
        return state

    def mismatch(self, config: Config, fingerprints: Dict[str, Any], allow_changed: Sequence[str] = ()
                 ) -> Optional[str]:
        """Why this run directory cannot continue with `config` on these shards (None when it can)."""
        changed = [line for line in diff_keys(self.config, result_dict(config))
                   if not any(line.startswith(prefix) for prefix in allow_changed)]
        if changed:
            return (f"{self.run_dir} was run with another config ({'; '.join(changed)}); restore those values, or "
                    f"set output.run_dir to a new folder for a new experiment")
        for key, value in fingerprints.items():
            if self.fingerprints.get(key) != value:
                return (f"{self.run_dir} was run on other data ({key} differs from the run's); point data.shards/"
                        f"data.extra_train at the same shard sets, or use a new output.run_dir")
        return None

    def has_work(self) -> bool:
        """True when a fold has trained or holds a checkpoint (what a restart with another config would lose)."""
        if any(self.fold(k).status in _KEPT_STATUS for k in self.fold_ids()):
            return True
        return self.paths.holds_fold_work()

    def _clear_folds(self) -> None:
        if is_rank_zero():
            for k in self.fold_ids():
                self.fold_path(k).unlink(missing_ok=True)

    def _migrate(self) -> None:
        """Version 1 kept the fold records inside state.json: move them into folds/ (idempotent, rank 0 only)."""
        legacy = self.entries.get("folds")
        if legacy is None or not is_rank_zero():
            return
        for key, record in legacy.items():
            if not self.fold_path(int(key)).exists():
                self._write_fold(int(key), record)
        self.entries = {k: v for k, v in self.entries.items() if k != "folds"}
        self.entries["kitpkg_state"] = STATE_VERSION
        self.save()

    def save(self) -> None:
        """Write the run-level entries into state.json atomically (rank 0 only); fold records are never in it."""
        if is_rank_zero():
            atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))

    # -- folds ----------------------------------------------------------------------------------------------------
    def fold(self, k: int) -> FoldRecord:
        """The record of fold k as it is on disk now (empty when not started)."""
        return FoldRecord.from_json(self._fold_json(k))

    def _fold_json(self, k: int) -> Dict[str, Any]:
        record = _read_json(self.fold_path(k))
        if record is None:  # a version-1 state.json not yet migrated (read by a rank other than 0)
            record = self.entries.get("folds", {}).get(str(int(k)), {})
        return record

    def fold_ids(self) -> List[int]:
        """Sorted folds that have a record (any status)."""
        return sorted({int(k) for k in self.entries.get("folds", {})} | set(self.paths.recorded_folds()))

    def folds(self) -> Dict[int, FoldRecord]:
        """{fold: record} of every fold that has a record."""
        return {k: self.fold(k) for k in self.fold_ids()}

    def is_done(self, k: int) -> bool:
        """True when fold k finished training and its predictions are written."""
        return self.fold(k).is_done

    def update_fold(self, k: int, **fields: Any) -> None:
        """Merge fields (FoldRecord keys with their JSON values: score None is null, a fold without a score) into
        fold k's record and write it atomically (only the process training fold k calls it)."""
        if is_rank_zero():
            self._write_fold(k, {**self._fold_json(k), **fields})

    def replace_fold(self, k: int, record: FoldRecord) -> None:
        """Write fold k's record as given, atomically (a fold copied from another run directory)."""
        if is_rank_zero():
            self._write_fold(k, record.to_json())

    def _write_fold(self, k: int, record: Dict[str, Any]) -> None:
        atomic_write_text(self.fold_path(k), json.dumps(record, indent=1, sort_keys=True))

    def done_folds(self) -> List[int]:
        """Sorted finished folds."""
        return [k for k in self.fold_ids() if self.is_done(k)]

    # -- run-level entries ----------------------------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        """Set a run-level entry in state.json (re-read first, so another process's entries are kept)."""
        if key == "folds":
            raise KitError("RunState.set('folds'): fold records are written with update_fold")
        if is_rank_zero():
            self.entries = {**(_read_json(self.path) or self.entries), key: value}
            self.save()
        else:
            self.entries[key] = value

    def get(self, key: str, default: Optional[Any] = None) -> Any:
        """A run-level entry."""
        return self.entries.get(key, default)

    @property
    def config_hash(self) -> Optional[str]:
        """The hash of the config the run was started with (what identifies it wherever it is copied)."""
        return self.entries.get("config_hash")

    @property
    def config(self) -> Dict[str, Any]:
        """{dotted key: value} of the config keys that change results, as the run was started with."""
        return self.entries.get("config", {})

    @property
    def fingerprints(self) -> Dict[str, Any]:
        """What identifies the run's data: shard fingerprints (manifest, extra_train), num_classes, init_from."""
        return self.entries.get("data", {})

    @property
    def shards(self) -> Optional[str]:
        """Where the run last saw its shards, relative to the run directory (a hint, not an identity)."""
        return self.entries.get("shards")

    @property
    def task(self) -> Task:
        """What the run predicts and how it is scored (kitpkg/task.py): state.json's "task", or for a run directory
        made before that was recorded, the task its num_classes and train.score_class imply."""
        if self.entries.get(TASK_KEY):
            return Task.from_record(self.entries[TASK_KEY])
        return task_of_outputs(self.fingerprints.get("num_classes", 1), self.config.get("train.score_class"))

    @property
    def cv(self) -> Optional[CVSummary]:
        """The CV summary (None until every fold of the run is done, or when it is not a JSON object)."""
        return CVSummary.from_json(self.entries.get(CVSummary.KEY))

    def set_cv(self, summary: CVSummary) -> None:
        """Write the CV summary into state.json."""
        self.set(CVSummary.KEY, summary.to_json())


def relpath(path: Path, run_dir: Path) -> str:
    """`path` relative to the run dir (so the run dir stays movable)."""
    return os.path.relpath(path, run_dir)
