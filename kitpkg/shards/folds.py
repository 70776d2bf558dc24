"""Stratified group K-fold: every group (patient) in one fold, label proportions balanced across folds, seeded.

What is balanced depends on the labels `kitpkg convert` reads (`fold_strata`):
- one label column whose values are classes (text, integers, whole-valued floats such as 0.0/1.0): each class;
- one float column with a fractional value (regression): its quantile bins (up to 10, about 2 samples or more per bin
  and fold), so every fold spans the whole range of the target;
- several columns, all 0/1 (multilabel): every label's positives at once, plus the rows with no positive. A row counts
  towards each of its labels and groups holding the rarest labels are placed first -- the greedy form of iterative
  stratification (Sechidis et al., 2011) -- rather than one stratum per row (its rarest label, which leaves the other
  labels to chance, or its label-set string, whose combinations are often nearly unique);
- several columns whose every row is a distribution (non-negative, summing to 1 ± 0.001: soft labels such as HMS vote
  fractions): the dominant (argmax) class, the consensus most public splits of such data stratify on;
- several other numeric columns (regression with K targets): each column's quantile bins, all balanced at once.
Groups (`--group-col`) are kept whole in every case: the greedy places groups, not rows.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Sequence

import numpy as np

_MAX_BINS = 10  # quantile bins of a float target: finer bins no longer balance anything a fold's size can show


def assign_folds(groups: Sequence[Hashable], labels: Optional[Sequence[Hashable]], k: int, seed: int = 42) -> List[int]:
    """Fold (0…k-1) of every sample from one class label per sample (None: unlabeled); groups share a fold."""
    return _greedy(groups, _one_hot(list(labels) if labels is not None else [0] * len(groups)), k, seed)


def stratified_folds(groups: Sequence[Hashable], labels: Optional[Sequence[Any]], k: int, seed: int = 42) -> List[int]:
    """Fold of every sample from labels as convert stores them: a value per sample (one label column) or a list of
    values per sample (several columns); what is balanced is `fold_strata`'s (see the module docstring)."""
    if labels is None:
        return assign_folds(groups, None, k, seed)
    return _greedy(groups, fold_strata(labels, k), k, seed)


def fold_strata(labels: Sequence[Any], k: int) -> np.ndarray:
    """N×S 0/1 matrix: which strata each sample counts towards (one column per class, bin or label; the docstring)."""
    values = list(labels)
    if not values or not isinstance(values[0], (list, tuple)):
        if any(is_fractional(v) for v in values):
            return _one_hot(_quantile_bins(np.asarray(values, dtype=float), k))
        return _one_hot(values)
    y = np.asarray(values, dtype=float)
    if np.isin(y, (0.0, 1.0)).all():
        return np.hstack([y, (y.sum(axis=1) == 0)[:, None].astype(float)])
    if (y >= 0).all() and np.allclose(y.sum(axis=1), 1.0, rtol=0.0, atol=1e-3):  # CSVs round to a few decimals
        return _one_hot(y.argmax(axis=1).tolist())
    return np.hstack([_one_hot(_quantile_bins(column, k)) for column in y.T])


def is_fractional(value: Any) -> bool:
    """Whether a label is a float that is no whole number (a regression target, not a class such as 1.0)."""
    return isinstance(value, float) and not value.is_integer()


def _one_hot(values: List[Hashable]) -> np.ndarray:
    """N×C indicator of each sample's class, classes in sorted text order."""
    classes = sorted(set(values), key=str)
    index: Dict[Hashable, int] = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(values), len(classes)))
    out[np.arange(len(values)), [index[v] for v in values]] = 1.0
    return out


def _quantile_bins(values: np.ndarray, k: int) -> List[int]:
    """The quantile bin of every value: up to _MAX_BINS bins with about 2 samples or more per bin in each fold."""
    n_bins = int(min(_MAX_BINS, max(1, len(values) // (2 * k))))
    edges = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right").tolist()


def _greedy(groups: Sequence[Hashable], strata: np.ndarray, k: int, seed: int) -> List[int]:
    """Fold of every sample: groups placed one by one where they least unbalance the strata's shares.

    Greedy, like sklearn's StratifiedGroupKFold but deterministic and dependency-free: groups holding the rarest
    strata are placed first (ties broken by a seeded shuffle), each into the fold where it least unbalances the
    per-stratum shares; groups of the common strata then fill the smallest folds.
    """
    if k < 2:
        raise ValueError(f"folds must be ≥ 2, not {k}")
    strata = strata[:, strata.sum(axis=0) > 0]  # a label no sample has balances nothing (and would divide by 0)
    group_ids: Dict[Hashable, int] = {}
    for g in groups:
        group_ids.setdefault(g, len(group_ids))
    group_of = np.fromiter((group_ids[g] for g in groups), dtype=np.int64, count=len(groups))
    counts = np.zeros((len(group_ids), strata.shape[1]))
    np.add.at(counts, group_of, strata)
    sizes = np.bincount(group_of, minlength=len(group_ids)).astype(float)
    members: List[List[int]] = [[] for _ in group_ids]
    for i, g in enumerate(group_of.tolist()):
        members[g].append(i)
    totals = counts.sum(axis=0)
    weight = 1.0 / totals  # a stratum counts as much as all others together: that is what "stratified" means here
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_ids))
    # rarity first, then larger groups first (hard to place late), shuffled ties
    key = [(-(counts[g] * weight).max() if strata.shape[1] > 1 else 0.0, -sizes[g]) for g in order]
    order = [g for _, g in sorted(zip(key, order), key=lambda t: t[0])]
    fold_counts = np.zeros((k, strata.shape[1]))
    fold_sizes = np.zeros(k)
    fold_of = [0] * len(groups)
    for g in order:
        c, size = counts[g], sizes[g]
        # growth of the sum of squared stratum shares (balances each stratum), then of squared sizes (balances folds)
        cost = (((2 * fold_counts + c) * c) * weight**2).sum(axis=1)
        cost += 1e-9 * (2 * fold_sizes + size) * size
        best = int(np.argmin(cost))
        fold_counts[best] += c
        fold_sizes[best] += size
        for i in members[g]:
            fold_of[i] = best
    return fold_of
