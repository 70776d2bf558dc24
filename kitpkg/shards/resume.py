"""Resumable conversion state: which shards of OUT/<size> are complete, and under which inputs/options they were made.

The state file (`.kitpkg-convert.json`, written atomically after each shard is renamed into place) records every
finished shard's ShardInfo (sha256, bytes, offsets, ids) and the images rejected while decoding it. On a re-run a
shard is kept only if its file still has that size and sha256 and the (deterministic) plan still puts the same ids
in it.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from typing import Any, Dict, List, Optional

from .. import fsutil
from ..errors import KitError
from .manifest import MANIFEST_NAME, ShardInfo

STATE_NAME = ".kitpkg-convert.json"


def fingerprint(options: Dict[str, Any]) -> str:
    """sha256 of the options and input hashes that decide every output byte."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


class ConvertState:
    """The finished shards of one output folder, persisted after each shard."""

    def __init__(self, folder: str, options: Dict[str, Any]):
        self.folder, self.options, self.fingerprint = folder, options, fingerprint(options)
        self.done: Dict[str, Dict[str, Any]] = {}  # file -> {"info": ShardInfo dict, "rejected": [...]}

    @classmethod
    def open(cls, folder: str, options: Dict[str, Any], overwrite: bool) -> "ConvertState":
        """Load the folder's state; refuse (KitError) if it was made from other inputs/options unless `overwrite`."""
        state = cls(folder, options)
        path = os.path.join(folder, STATE_NAME)
        old: Optional[Dict[str, Any]] = None
        if os.path.exists(path):
            try:
                with open(path) as f:
                    old = json.load(f)
            except (OSError, json.JSONDecodeError):
                old = None  # a damaged state file only costs re-writing the shards
        if old is not None and old.get("fingerprint") == state.fingerprint:
            state.done = old.get("shards", {})
            return state
        stale = old is not None or os.path.exists(os.path.join(folder, MANIFEST_NAME))
        if stale and not overwrite:
            changed = sorted(k for k in options if old and old.get("options", {}).get(k) != options[k])
            what = f" (changed: {', '.join(changed)})" if changed else ""
            raise KitError(f"{folder} already holds shards made from other inputs or options{what}; re-run with "
                           "--overwrite to replace them, or choose another output folder")
        if stale:
            state._remove_old(old)
        return state

    def _remove_old(self, old: Optional[Dict[str, Any]]) -> None:
        for name in list((old or {}).get("shards", {})) + [MANIFEST_NAME, STATE_NAME]:
            path = os.path.join(self.folder, name)
            if os.path.exists(path):
                os.unlink(path)

    def is_complete(self, file: str, ids: List[str]) -> bool:
        """True when `file` was finished earlier for the planned `ids` and still has its recorded size and sha256."""
        entry = self.done.get(file)
        path = os.path.join(self.folder, file)
        if not entry or not os.path.exists(path):
            return False
        info = entry["info"]
        if entry.get("planned") != ids or os.path.getsize(path) != info["bytes"]:
            return False
        return fsutil.sha256_file(path) == info["sha256"]

    def record(self, info: ShardInfo, rejected: List[Dict[str, str]], planned: List[str]) -> None:
        """Remember a shard that is now complete under its final name, and persist the state atomically."""
        self.done[info.file] = {"info": dataclasses.asdict(info), "rejected": rejected, "planned": planned}
        body = {"fingerprint": self.fingerprint, "options": self.options, "shards": self.done}
        fsutil.atomic_write_text(os.path.join(self.folder, STATE_NAME), json.dumps(body))

    def shard(self, file: str) -> ShardInfo:
        """The ShardInfo of a finished shard."""
        return ShardInfo(**self.done[file]["info"])

    def rejected(self, file: str) -> List[Dict[str, str]]:
        """Images rejected while decoding a finished shard."""
        return list(self.done[file]["rejected"])

    def clean_temp_files(self) -> None:
        """Delete temp files left by a killed run (atomic_write names them `.<final name>.<random>.tmp`)."""
        for path in glob.glob(os.path.join(glob.escape(self.folder), ".*.tmp")):
            os.unlink(path)
