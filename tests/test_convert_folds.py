"""Stratified group K-fold: groups never straddle folds, positive rates and sizes balance, seeded and deterministic."""
import numpy as np
import pytest

from kitpkg.shards.folds import assign_folds


def _isic_like(seed, n_patients=400, rate=0.02):
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for p in range(n_patients):
        n = int(rng.integers(1, 40))  # ISIC: 1 to ~100 images per patient
        risky = rng.uniform() < 0.1
        groups += [f"IP_{p}"] * n
        labels += [int(risky and rng.uniform() < rate * 8) for _ in range(n)]
    return groups, labels


@pytest.mark.parametrize("k", [3, 5, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_groups_stay_together_and_classes_balance(k, seed):
    groups, labels = _isic_like(seed)
    folds = np.array(assign_folds(groups, labels, k, seed=42))
    for g in set(groups):
        assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    y = np.array(labels)
    pos = np.array([y[folds == f].sum() for f in range(k)])
    size = np.array([(folds == f).sum() for f in range(k)])
    biggest = max(sum(y[i] for i, x in enumerate(groups) if x == g) for g in set(groups))
    assert pos.max() - pos.min() <= max(2, biggest)  # one patient's positives cannot be split
    assert size.max() / size.min() < 1.2


def test_multiclass_and_unlabeled():
    rng = np.random.default_rng(0)
    groups = list(rng.integers(0, 200, 2000))
    labels = list(rng.choice(["nevus", "melanoma", "bkl"], 2000, p=[0.8, 0.05, 0.15]))
    folds = np.array(assign_folds(groups, labels, 4))
    for cls in ("nevus", "melanoma", "bkl"):
        counts = [np.sum((folds == f) & (np.array(labels) == cls)) for f in range(4)]
        assert max(counts) - min(counts) <= 0.25 * np.mean(counts) + 2
    folds = np.array(assign_folds(groups, None, 4))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 25


def test_deterministic_for_a_seed_and_seed_matters():
    groups, labels = _isic_like(0)
    assert assign_folds(groups, labels, 5, seed=1) == assign_folds(groups, labels, 5, seed=1)
    assert assign_folds(groups, labels, 5, seed=1) != assign_folds(groups, labels, 5, seed=2)
    with pytest.raises(ValueError, match="folds"):
        assign_folds(groups, labels, 1)
