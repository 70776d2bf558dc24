"""`kitpkg lr-find` with optim.lookahead: the sweep runs on the base optimizer, and the result/plot title says so."""
from __future__ import annotations

import json

import pytest

from kitpkg.config import config_from_dict, load_config
from kitpkg.train.lr_find import sweep_config, sweep_title

from conftest import write_train_config


def test_sweep_config_drops_lookahead_only():
    config = config_from_dict({"data": {"shards": "x"}, "optim": {"name": "radam", "lookahead": True, "lr": 0.01}})
    sweep = sweep_config(config)
    assert not sweep.optim.lookahead and (sweep.optim.name, sweep.optim.lr) == ("radam", 0.01)
    assert config.optim.lookahead  # the user's config is left as it is
    assert "base optimizer radam" in sweep_title(config) and "Lookahead off" in sweep_title(config)
    plain = config_from_dict({"data": {"shards": "x"}})
    assert sweep_config(plain) is plain and "Lookahead" not in sweep_title(plain)


@pytest.mark.slow
def test_lr_find_with_lookahead_sweeps_the_base_optimizer(tfrecord_manifest, tmp_path, monkeypatch):
    import torch

    import kitpkg.train.model as model
    from kitpkg.train.lr_find import run_lr_find

    built = []
    real = model.build_optimizer

    def recording(net, config):
        optimizer = real(net, config)
        if not isinstance(net, torch.nn.Linear):  # not check_components' 1-parameter probe
            built.append(type(optimizer).__name__)
        return optimizer

    monkeypatch.setattr(model, "build_optimizer", recording)
    config = load_config(write_train_config(tmp_path, tfrecord_manifest),
                         overrides=["optim.name=radam", "optim.lookahead=true"])
    result = run_lr_find(config, tmp_path / "run", num_training=4)
    assert built == ["RAdam"]  # the sweep's optimizer: the base one alone, not Lookahead(RAdam)
    saved = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert saved["optimizer"] == "radam" and "Lookahead off" in saved["title"]
    assert len(result["lr"]) == 4
