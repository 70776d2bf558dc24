"""train.pos_weight: the positive term of the binary loss (bce and focal) weighted, validated, in the config hash."""
from __future__ import annotations

import pytest
import torch

from kitpkg.config import config_from_dict, config_hash
from kitpkg.errors import KitError
from kitpkg.task import task_of_outputs
from kitpkg.train.losses import loss_of, make_loss

BINARY = task_of_outputs(1)


@pytest.mark.parametrize("kind", ["bce", "focal"])
def test_positive_term_is_scaled_and_negatives_are_not(kind):
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    pos, neg = torch.ones(3), torch.zeros(3)
    plain, weighted = make_loss(kind, BINARY), make_loss(kind, BINARY, pos_weight=3.0)
    assert weighted(logits, pos) == pytest.approx(3 * plain(logits, pos).item(), rel=1e-6)
    assert weighted(logits, neg) == pytest.approx(plain(logits, neg).item(), rel=1e-6)


def test_config_key_reaches_the_loss_and_the_hash():
    base = {"data": {"shards": "x"}}
    config = config_from_dict({**base, "train": {"pos_weight": 4}})
    logits, target = torch.tensor([[0.5]]), torch.ones(1)
    expected = 4 * make_loss("bce", BINARY)(logits, target).item()
    assert loss_of(config.train, BINARY)(logits, target) == pytest.approx(expected)
    assert config_hash(config) != config_hash(config_from_dict(base))


def test_bad_values_name_the_key():
    with pytest.raises(KitError, match=r"train.pos_weight: must be > 0"):
        config_from_dict({"data": {"shards": "x"}, "train": {"pos_weight": 0}})
    with pytest.raises(KitError, match=r"train.pos_weight: only for a binary target"):
        make_loss("ce", task_of_outputs(3), pos_weight=2.0)
