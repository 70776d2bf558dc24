"""Stratified group K-fold: every group (patient) in one fold, class proportions balanced across folds, seeded."""
from __future__ import annotations

from typing import Hashable, List, Optional, Sequence

import numpy as np


def assign_folds(groups: Sequence[Hashable], labels: Optional[Sequence[Hashable]], k: int, seed: int = 42) -> List[int]:
    """Fold (0…k-1) of every sample; samples of one group share a fold and each class is spread evenly.

    Greedy, like sklearn's StratifiedGroupKFold but deterministic and dependency-free: groups holding the rarest
    classes are placed first (ties broken by a seeded shuffle), each into the fold where it least unbalances the
    per-class shares; groups of the common class then fill the smallest folds.
    """
    if k < 2:
        raise ValueError(f"folds must be ≥ 2, not {k}")
    n = len(groups)
    labels = list(labels) if labels is not None else [0] * n
    classes = sorted(set(labels), key=str)
    class_index = {c: i for i, c in enumerate(classes)}
    group_ids = {}
    for g in groups:
        group_ids.setdefault(g, len(group_ids))
    counts = np.zeros((len(group_ids), len(classes)))
    members: List[List[int]] = [[] for _ in group_ids]
    for i, (g, y) in enumerate(zip(groups, labels)):
        counts[group_ids[g], class_index[y]] += 1
        members[group_ids[g]].append(i)
    totals = counts.sum(axis=0)
    weight = 1.0 / totals  # a positive counts as much as all negatives together: that is what "stratified" means here
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_ids))
    # rarity first, then larger groups first (hard to place late), shuffled ties
    key = [(-(counts[g] * weight).max() if len(classes) > 1 else 0.0, -counts[g].sum()) for g in order]
    order = [g for _, g in sorted(zip(key, order), key=lambda t: t[0])]
    fold_counts = np.zeros((k, len(classes)))
    fold_of = [0] * n
    for g in order:
        c = counts[g]
        # growth of the sum of squared class shares (balances each class), then of squared sizes (balances folds)
        cost = (((2 * fold_counts + c) * c) * weight**2).sum(axis=1)
        cost += 1e-9 * (2 * fold_counts.sum(axis=1) + c.sum()) * c.sum()
        best = int(np.argmin(cost))
        fold_counts[best] += counts[g]
        for i in members[g]:
            fold_of[i] = best
    return fold_of
