"""Run directories without training: given predictions are written through the kit's own writers (RunState,
`cv.record_fold`, `cv.finish`), so their on-disk format is the one `kitpkg cv` writes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from unittest import mock
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from kitpkg.config import config_from_dict
from kitpkg.shards.manifest import Manifest, ShardInfo
from kitpkg.tables import target_score_columns
from kitpkg.task import Task
from kitpkg.train import predict as P
from kitpkg.train.cv import RunInputs, finish, record_fold
from kitpkg.train.runstate import RunState, relpath


@dataclass
class FakeData:
    """Labelled samples split into folds (and a test split), as a manifest without shard files would hold them."""

    ids: List[str]
    folds: np.ndarray
    targets: np.ndarray  # (N,) classes, or (N, K) values of several label columns
    n_test: int = 0
    image_size: int = 64
    label_col: str = "target"  # the CSV column the labels came from (another one: other shards, other targets)

    @property
    def test_ids(self) -> List[str]:
        """Ids of the test split."""
        return [f"test_{i:04d}" for i in range(self.n_test)]

    @property
    def manifest(self) -> Manifest:
        """The manifest of these samples (one shard per fold; `image_size` and the split change its fingerprint)."""
        shards = []
        for k in np.unique(self.folds):
            ids = [self.ids[i] for i in np.flatnonzero(self.folds == k)]
            labels = ",".join(str(self._label(i)) for i in np.flatnonzero(self.folds == k))
            content = hashlib.sha256(f"{self.image_size}:{','.join(ids)}:{self.label_col}:{labels}".encode()
                                     ).hexdigest()  # as a file's would: the labels are inside the shard records
            shards.append(ShardInfo(file=f"train{k}.tfrec", split="train", fold=int(k), samples=len(ids), bytes=0,
                                    sha256=content, offsets=list(range(len(ids))), ids=ids,
                                    labels=[self._label(i) for i in np.flatnonzero(self.folds == k)]))
        if self.n_test:
            shards.append(ShardInfo(file="test.tfrec", split="test", fold=None, samples=self.n_test, bytes=0,
                                    sha256="t", offsets=list(range(self.n_test)), ids=self.test_ids))
        counts = {} if self.targets.ndim > 1 else {str(c): int((self.targets == c).sum())
                                                   for c in np.unique(self.targets)}
        return Manifest(format="tfrecord", schema={}, shards=shards, label_col=self.label_col,
                        image_size=self.image_size, class_counts=counts, num_folds=len(np.unique(self.folds)))

    def _label(self, i: int):
        """Sample i's label as a shard records it: a class, or a list of values (several label columns)."""
        return [float(v) for v in self.targets[i]] if self.targets.ndim > 1 else int(self.targets[i])


def fake_data(n: int, k: int = 5, seed: int = 0, n_test: int = 0, positives: float = 0.3) -> FakeData:
    """`n` samples with binary targets in `k` random folds."""
    rng = np.random.default_rng(seed)
    return FakeData([f"img_{i:05d}" for i in range(n)], rng.permutation(np.arange(n) % k),
                    (rng.random(n) < positives).astype(int), n_test)


def fake_config(run_dir: Path, fake: FakeData, config: Optional[Dict] = None, shards_dir: Optional[Path] = None):
    """The Config of a fake run: a tiny model on `fake`'s manifest (at `shards_dir`), `config` ({dotted: value}) on
    top."""
    sections = {"data": {"shards": str(shards_dir or run_dir), "image_size": fake.image_size},
                "model": {"name": "resnet10t"}, "train": {"epochs": 3}}
    for key, value in (config or {}).items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    return config_from_dict(sections, run_dir.parent, run_dir.name)


def write_best_checkpoint(run_dir: Path, k: int, best: Optional[float] = 0.75) -> Path:
    """A tiny checkpoint standing in for fold k's best.ckpt: loads with weights_only=True and records, as
    RunCheckpoints' state in a real one, that epoch 1 scored `best`."""
    import torch

    path = run_dir / f"fold{k}" / "ckpt" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(2)},
                "callbacks": {"RunCheckpoints": {"best": best, "best_epoch": 1, "history": []}}}, path)
    return path


def make_run(run_dir: Path, fake: FakeData, oof: np.ndarray,
             test: Optional[np.ndarray] = None, config: Optional[Dict] = None, done: Optional[Sequence[int]] = None,
             shards_dir: Optional[Path] = None, task: Optional[Task] = None, manifest: Optional[Manifest] = None
             ) -> Path:
    """Write a run directory: OOF probabilities `oof` (rows × classes, in `fake.ids` order) and per-fold test
    probabilities `test` (folds × rows × classes); only the folds in `done` finish (default: all, then `finish`).
    `task` (recorded in state.json): a multilabel, regression or soft task of `fake`'s (N, K) targets; None: the
    binary or multiclass task the columns of `oof` imply. `manifest`: a converted shard set (its ids, folds and labels
    `fake`'s) the run records as its shards, instead of `fake`'s manifest."""
    given = manifest is not None
    manifest, targets = manifest if given else fake.manifest, fake.targets
    oof = oof.reshape(len(fake.ids), -1)
    cfg = fake_config(run_dir, fake, config, shards_dir)
    num_classes = oof.shape[1] if oof.shape[1] > 1 else 1
    data = RunInputs(manifest, [], num_classes, task=task)
    state = RunState.open(run_dir, cfg, data.fingerprints(), task=task)
    if shards_dir is not None:
        manifest.save(str(shards_dir))
        state.set("shards", relpath(shards_dir, run_dir))
    elif given:
        state.set("shards", relpath(Path(manifest.root), run_dir))
    row = {i: n for n, i in enumerate(fake.ids)}
    all_folds = manifest.folds()
    for k in (all_folds if done is None else done):
        ids = P.fold_ids(manifest, "val", k)
        sel = [row[i] for i in ids]
        frame = P.pd.DataFrame(oof[sel], columns=P.score_columns(oof.shape[1]))
        columns = target_score_columns(1 if targets.ndim == 1 else targets.shape[1])
        for j, column in reversed(list(enumerate(columns))):  # several label columns: target0..target{K-1}
            frame.insert(0, column, targets[sel].reshape(len(sel), -1)[:, j].astype(float))
        frame.insert(0, "id", ids)
        tf = None
        if test is not None:
            tf = P.pd.DataFrame(test[all_folds.index(k)], columns=P.score_columns(oof.shape[1]))
            tf.insert(0, "id", P.fold_ids(manifest, "test"))
        write_best_checkpoint(run_dir, k)
        record_fold(state, k, frame, tf, data, "prob")
    if done is None:
        with mock.patch("kitpkg.train.report.write_report"):  # its plots cost seconds and are not what is tested
            finish(cfg, data, state, all_folds)
    return run_dir
