"""data.aug's hflip/vflip/transpose are off unless set (flips are wrong for many image kinds); the templates turn them
on where they fit. A config with the old default (on) hashes as before, and a run directory made when unset meant
on opens with a config that leaves them unset -- and keeps training with its flips."""
from __future__ import annotations

import json

from kitpkg.augment.stages import stage_specs
from kitpkg.config import Config, config_from_dict, config_hash, load_config

from conftest import write_train_config
from test_config import PREVIOUS_RELEASE_HASHES

FLIPS = ("hflip", "vflip", "transpose")


def test_no_flips_unless_set_and_the_old_default_hashes_as_before():
    assert stage_specs(Config().data.aug) == (None, [])
    old_default = Config()
    for name in FLIPS:
        setattr(old_default.data.aug, name, True)
    assert config_hash(old_default) == PREVIOUS_RELEASE_HASHES["default"]
    assert [op["name"] for op in stage_specs(old_default.data.aug)[1]] == list(FLIPS)
    preset = config_from_dict({"data": {"shards": "x", "aug": {"preset": "isic"}}})
    assert stage_specs(preset.data.aug)[1], "a preset needs no flags"


def test_a_run_dir_made_when_unset_meant_flips_opens_and_keeps_them(tfrecord_manifest, tmp_path, capsys):
    from kitpkg.train.cv import open_run

    path = write_train_config(tmp_path, tfrecord_manifest)
    old = load_config(path, overrides=[f"data.aug.{name}=true" for name in FLIPS])  # what the old default meant
    _, state = open_run(old, tmp_path / "run")
    state.update_fold(0, status="done", score=0.5)  # work in it: a changed config would be refused
    config = load_config(path)  # the same YAML, flags unset
    _, state = open_run(config, tmp_path / "run")
    assert all(getattr(config.data.aug, name) is True for name in FLIPS), "the run continues with its flips"
    assert "data.aug.hflip" in capsys.readouterr().out
    assert json.loads(state.path.read_text())["config_hash"] == config_hash(old)
