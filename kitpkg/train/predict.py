"""Predictions: a split through `trainer.predict` (TTA inside the module), per-rank parts merged by rank 0, OOF rows,
fold-averaged test predictions (the submission: train/decisions.py and kitpkg/submission.py).

Averaging (`predict.average`): `prob` = arithmetic mean of probabilities over TTA views and then over folds; `logit` =
mean of logits over views and folds, then sigmoid/softmax. Part files hold scores in that space (columns s0..s{C-1}).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import KitError
from ..predictions import non_finite_ids, prediction_frame
from ..tables import read_csv, score_cols, score_columns, target_cols, target_score_columns, write_csv
from ..task import Task
from .outputs import scored_target, scores_to_prob


def predict_frame(trainer: Any, module: Any, loader: Any, part_dir: Path, name: str,
                  expected_ids: Sequence[str]) -> Optional[pd.DataFrame]:
    """Predict `loader` on every rank; rank 0 returns all rows (id, target, s*) in `expected_ids` order, else None.

    Each rank writes its rows to a part file; after a barrier rank 0 merges them and checks every expected id came
    back exactly once (the loader's exactly-once guarantee, checked rather than trusted).
    """
    # handed over as a plain iterable: Lightning re-instantiates DataLoaders for predict (to inject an index sampler),
    # which a ShardLoader (batches come from its IterableDataset) does not support and does not need
    outputs = trainer.predict(module, dataloaders=_Iterable(loader), return_predictions=True) or []
    cols = score_columns(module.num_classes)
    ids = [str(i) for out in outputs for i in out["id"]]
    scores = torch.cat([out["score"] for out in outputs]).numpy() if outputs else np.zeros((0, len(cols)))
    # B targets (one label column) or B×K (several): one target column each
    targets = torch.cat([out["target"].float().reshape(len(out["id"]), -1) for out in outputs]).numpy() \
        if outputs else np.zeros((0, 1))
    frame = pd.DataFrame(scores.astype(np.float64), columns=cols)
    for j, column in reversed(list(enumerate(target_score_columns(targets.shape[1])))):
        frame.insert(0, column, targets[:, j])
    frame.insert(0, "id", ids)
    rank, world = trainer.global_rank, trainer.world_size
    if world > 1:
        part_dir.mkdir(parents=True, exist_ok=True)
        write_csv(frame, part_dir / f"{name}.rank{rank}.csv")
        trainer.strategy.barrier("kitpkg-predict-parts")
        if rank != 0:
            return None
        parts = [part_dir / f"{name}.rank{r}.csv" for r in range(world)]
        frame = pd.concat([read_csv(p) for p in parts], ignore_index=True)
        for p in parts:
            p.unlink(missing_ok=True)
    return _in_order(frame, expected_ids, name)


class _Iterable:
    """A loader seen by Lightning as a plain iterable (no sampler injection)."""

    def __init__(self, loader: Any):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _in_order(frame: pd.DataFrame, expected_ids: Sequence[str], name: str) -> pd.DataFrame:
    dupes = frame["id"][frame["id"].duplicated()].tolist()
    missing = set(expected_ids) - set(frame["id"])
    extra = set(frame["id"]) - set(expected_ids)
    if dupes or missing or extra:
        raise KitError(f"{name}: predictions are not exactly once per sample (duplicates {dupes[:3]}, missing "
                       f"{sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}); damaged shards? run `kitpkg verify`")
    return frame.set_index("id").loc[list(expected_ids)].reset_index()


def oof_rows(frame: pd.DataFrame, fold: int, task: Task, space: str) -> pd.DataFrame:
    """OOF rows of one fold from a scores frame, in the task's columns (kitpkg/predictions.py): id, fold, target,
    prediction (+ prob_c); with train.score_class target is 1 for that class and 0 else, prediction its probability."""
    cols = score_cols(frame)
    require_finite(frame["id"], frame[cols].to_numpy(), f"fold {fold}'s OOF scores")
    probs = scores_to_prob(task, torch.tensor(frame[cols].to_numpy()), space).numpy()
    if task.one_logit:
        target = frame["target"]
    elif task.per_label:  # regression values, multilabel 0/1: every target column as read
        target = frame[target_cols(frame)].to_numpy()
    else:
        target = scored_target(task, frame["target"].astype(int))
    return prediction_frame(task, frame["id"], probs, fold=fold, target=target)


def average_test(parts: Sequence[pd.DataFrame], task: Task, space: str) -> pd.DataFrame:
    """Mean over folds of test score frames (same ids, same order) -> id, prediction (+ prob_c); see oof_rows."""
    if not parts:
        raise KitError("no test predictions to average (the manifest has no test split?)")
    cols = score_cols(parts[0])
    for p in parts[1:]:
        if list(p["id"]) != list(parts[0]["id"]):
            raise KitError("test predictions of the folds cover different ids; re-run `kitpkg predict`")
    mean = np.mean([p[cols].to_numpy() for p in parts], axis=0)
    require_finite(parts[0]["id"], mean, "the fold-averaged test scores")
    probs = scores_to_prob(task, torch.tensor(mean), space).numpy()
    return prediction_frame(task, parts[0]["id"].astype(str), probs)


def require_finite(ids: Sequence[Any], values: np.ndarray, what: str) -> None:
    """KitError naming `what` and the first ids when a row of `values` (N, or N×C) holds NaN or inf: a diverged fold
    (or a non-finite input) must never reach an OOF, a test prediction or a submission."""
    bad = non_finite_ids(ids, values)
    if bad:
        raise KitError(f"{what}: {len(bad)} of {len(values)} are not finite (ids {bad[:3]}); a fold diverged or an input "
                       f"is non-finite: retrain it (delete its folder) and check optim.lr and the model.meta columns")


def fold_ids(manifest: Any, split: str, fold: Optional[int] = None) -> List[str]:
    """Sample ids of a split (a train fold, or the test split) in manifest order."""
    shards = manifest.select("test") if split == "test" else manifest.select("train", [fold])
    return [str(i) for s in shards for i in s.ids]
