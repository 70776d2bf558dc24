"""Experiment config: YAML <-> dataclasses, clear errors naming the dotted key, path resolution, hash and diffs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kitpkg.config import (Config, config_hash, diff_keys, load_config, result_dict, to_yaml,
                           write_config_value)
from kitpkg.errors import KitError
from kitpkg.shards.manifest import resolve_manifest_path

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_configs_load(tmp_path):
    for path in sorted((REPO / "kitpkg" / "configs").glob("*.yaml")):
        config = load_config(path)
        assert config.name == path.stem
        assert config.data.shards


def test_yaml_round_trip_and_defaults(tmp_path):
    path = _write(tmp_path, "data: {shards: shards, image_size: 512}\ntrain: {epochs: 3}\noptim: {lr: 1e-3}\n")
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.train.epochs == 3 and config.data.image_size == 512
    assert config.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads `1e-3` as a string; accepted as a float
    assert config.model.name and config.train.precision == "auto"  # defaults filled in
    again = load_config(_write(tmp_path, to_yaml(config), "again.yaml"))
    assert result_dict(again) == result_dict(config)
    assert config_hash(again) == config_hash(config)


@pytest.mark.parametrize("text, message", [
    ("data: {shards: s}\ntrain: {epochs: ten}\n", "train.epochs: expected int, got 'ten'"),
    ("data: {shards: s}\ntrain: {epoch: 3}\n", "train.epoch: unknown key"),
    ("data: {shards: s}\nmodle: {name: x}\n", "modle: unknown key"),
    ("data: {shards: s, aug: {hflip: maybe}}\n", "data.aug.hflip: expected bool or null, got 'maybe'"),
    ("data: {shards: s, batch_size: 0}\n", "data.batch_size: must be >= 1"),
    ("data: {shards: s}\ntrain: {loss: hinge}\n", "train.loss: expected one of"),
    ("data: {shards: s}\npredict: {tta: [hflip, spin]}\n", "predict.tta[1]: unknown view 'spin'"),
    ("data: {shards: s}\ntrain: {epochs: 2.5}\n", "train.epochs: expected int, got 2.5"),
    ("data: {shards: s}\ntrain: {deterministic: 1}\n", "train.deterministic: expected bool, got 1"),
    ("data: {shards: s}\ndata: [1]\n", "data: expected a mapping"),
    ("model: {name: x}\n", "data.shards: required"),
    ("data: {shards: s\n", "not valid YAML"),
    ("data: {shards: s, folds: [0, 1, 0]}\n", "data.folds: expected distinct fold numbers >= 0"),
])
def test_errors_name_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(KitError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # the file is named too


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    config = load_config(_write(sub, "data: {shards: ../shards, extra_train: [../pseudo]}\nmodel: {weights: w.pth}\n"))
    assert config.data.shards == str(tmp_path / "shards")
    assert config.data.extra_train == [str(tmp_path / "pseudo")]
    assert config.model.weights == str(sub / "w.pth")
    assert config.output.run_dir == str(sub / "runs" / "exp")  # default run dir: runs/<name> beside the config
    cached = load_config(_write(sub, "data: {shards: ../shards, cache_dir: ../cache}\n"))
    assert cached.data.cache_dir == str(tmp_path / "cache")
    assert config_hash(cached) == config_hash(load_config(_write(sub, "data: {shards: ../shards}\n", "plain.yaml")))


def test_overrides(tmp_path):
    path = _write(tmp_path, "data: {shards: s}\n")
    config = load_config(path, overrides=["train.epochs=2", "predict.tta=[hflip]", "model.name=resnet10t"])
    assert config.train.epochs == 2 and config.predict.tta == ["hflip"] and config.model.name == "resnet10t"
    with pytest.raises(KitError, match="train.epochs: expected int"):
        load_config(path, overrides=["train.epochs=two"])


def test_hash_ignores_execution_only_keys_and_diff_names_keys(tmp_path):
    base = load_config(_write(tmp_path, "data: {shards: s}\n"))
    moved = load_config(_write(tmp_path, "data: {shards: /elsewhere/s, num_workers: 8}\noutput: {pred_col: p}\n",
                               "moved.yaml"))
    assert config_hash(base) == config_hash(moved)  # paths, workers and submission names do not change the numbers
    changed = load_config(_write(tmp_path, "data: {shards: s, image_size: 512}\noptim: {lr: 0.01}\n", "c.yaml"))
    assert config_hash(changed) != config_hash(base)
    lines = diff_keys(result_dict(base), result_dict(changed))
    assert any(line.startswith("data.image_size: 384 -> 512") for line in lines)
    assert any(line.startswith("optim.lr:") for line in lines)
    assert len(lines) == 2
    assert not any("/" in json.dumps(v) for v in result_dict(base).values() if isinstance(v, str))  # no paths


def test_manifest_resolution_by_image_size(tmp_path):
    for size in (384, 512):
        (tmp_path / "out" / str(size)).mkdir(parents=True)
        (tmp_path / "out" / str(size) / "manifest.json").write_text("{}")
    assert resolve_manifest_path(str(tmp_path / "out"), 512) == str(tmp_path / "out" / "512" / "manifest.json")
    with pytest.raises(KitError, match="image_size 256.*sizes there: 384, 512"):
        resolve_manifest_path(str(tmp_path / "out"), 256)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "manifest.json").write_text("{}")
    assert resolve_manifest_path(str(tmp_path / "flat"), 384) == str(tmp_path / "flat" / "manifest.json")


def test_write_config_value_keeps_comments(tmp_path):
    path = _write(tmp_path, "# my experiment\ndata:\n  shards: s  # the shards\noptim:\n  name: adamw\n"
                            "  lr: 0.001  # from lr-find\ntrain:\n  epochs: 2\n")
    write_config_value(path, "optim.lr", 0.0123)
    text = path.read_text()
    assert "# my experiment" in text and "# the shards" in text and "lr: 0.0123  # from lr-find" in text
    assert yaml.safe_load(text)["optim"] == {"name": "adamw", "lr": 0.0123}
    path2 = _write(tmp_path, "data:\n  shards: s\n", "nolr.yaml")
    write_config_value(path2, "optim.lr", 0.5)
    assert load_config(path2).optim.lr == 0.5


COMMENTED = """\
# melanoma, 5 folds  -- my notes
data:
  shards: s            # the 512 px set
  image_size: 64
optim:
  name: adamw   # tried radam: worse
  # lr below came from lr-find
  lr: 0.001     # keep aligned
train: {epochs: 2, seed: 1}  # short
"""


@pytest.mark.parametrize("key, value, before, after", [
    ("optim.lr", 1.2e-05, "  lr: 0.001     # keep aligned\n", "  lr: 1.2e-05     # keep aligned\n"),
    ("train.epochs", 5, "train: {epochs: 2, seed: 1}  # short\n", "train: {epochs: 5, seed: 1}  # short\n"),
])
def test_write_config_value_changes_only_that_line(tmp_path, key, value, before, after):
    path = _write(tmp_path, COMMENTED)
    write_config_value(path, key, value)
    assert path.read_text() == COMMENTED.replace(before, after)  # every comment and the layout kept
    assert load_config(path).optim.lr == (value if key == "optim.lr" else 0.001)


def test_write_config_value_adds_an_absent_key_under_its_section(tmp_path):
    path = _write(tmp_path, COMMENTED)
    write_config_value(path, "optim.weight_decay", 0.05)
    write_config_value(path, "sched.min_lr", 1e-7)
    text = path.read_text()
    line = "  lr: 0.001     # keep aligned\n"
    assert text == COMMENTED.replace(line, line + "  weight_decay: 0.05\n") + "sched:\n  min_lr: 1.0e-07\n"
    config = load_config(path)
    assert (config.optim.weight_decay, config.sched.min_lr, config.train.seed) == (0.05, 1e-7, 1)


@pytest.mark.parametrize("folder", ["my demo: v2", "run #3", "it's \"quoted\""])
def test_demo_and_notebook_paths_survive_yaml(tmp_path, folder):
    from kitpkg import notebook as nb
    from kitpkg.demo import demo_config
    from kitpkg.notebook.bootstrap import Environment

    out = tmp_path / folder
    config = demo_config(out, ["train.epochs=1"])
    assert config.data.shards == str(out / "shards") and config.output.run_dir == str(out / "run")
    assert config.train.epochs == 1
    env = Environment(platform="local", project="p", run_dir=out / "runs", data_dir=out / "data",
                      scratch_dir=out / "tmp", cache_dir=None, submit_dir=out)
    config = nb.experiment(env, out / "shards", "exp")
    assert config.data.shards == str(out / "shards") and config.output.run_dir == str(out / "runs" / "exp")


# config_hash of the previous release (commit 106649d) for these configs: run directories it made must still resume
PREVIOUS_RELEASE_HASHES = {
    "default": "01f7dd5ef2cab952eeee074e296625e0df60c4767d7eb51ae6ac1e077aa198ce",
    "demo.yaml": "a971b11d3e3f3bcc0e7dc323fe0ec4041f2244c14603072d2a8118244ff78316",
    "effnet_b4_384.yaml": "71a740a90196c0b1ffa4ad5b707cd42154395e133b17fc116c7a857f6048520f",
}


def test_keys_added_later_leave_the_hash_of_earlier_runs_alone():
    """A run directory made before data.aug/model.meta/train.mixup/... existed keeps its hash; setting one counts."""
    from kitpkg.configs import template_path

    old_default = Config()  # the flips were on by default then (off now: unset counts as off, test_flip_defaults.py)
    old_default.data.aug.hflip = old_default.data.aug.vflip = old_default.data.aug.transpose = True
    assert config_hash(old_default) == PREVIOUS_RELEASE_HASHES["default"]
    for name in ("demo.yaml", "effnet_b4_384.yaml"):
        assert config_hash(load_config(template_path(name.removesuffix(".yaml")))) == PREVIOUS_RELEASE_HASHES[name]
    changed = Config()
    changed.train.pos_weight = 4.0
    assert config_hash(changed) != config_hash(Config())


def _holds_numbers(tp):
    """Whether a type hint holds ints/floats: as itself, as list items, as mapping values, or as a Union member."""
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return any(_holds_numbers(a) for a in args)
    if origin in (list, dict):
        return _holds_numbers(args[-1])
    return tp in (int, float)


def _numeric_keys(cls=Config, prefix=""):
    """(dotted key, field) of every int/float setting of the Config, nested sections (train.mixup, ...) included."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        section = [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(a)]
        if section:
            yield from _numeric_keys(section[0], f"{prefix}{f.name}.")
        elif _holds_numbers(hints[f.name]):
            yield prefix + f.name, f


def _with(key, value):
    """A config dict with `key` set; its optional section (train.mixup, ...) switched on."""
    data = {"data": {"shards": "s"}}
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def test_every_numeric_key_declares_its_range():
    from kitpkg.ranges import range_of

    keys = dict(_numeric_keys())
    assert "optim.lr" in keys and "train.mixup.prob" in keys and "data.sampling.class_weights" in keys
    assert [k for k, f in keys.items() if range_of(f) is None] == []


@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf"])
def test_nan_or_inf_in_any_float_key_is_refused_naming_it(bad):
    import typing

    from kitpkg.config import config_from_dict

    value = yaml.safe_load(bad)
    floats = [k for k, f in _numeric_keys() if "float" in str(f.type)]
    assert len(floats) > 15
    for key in floats:
        with pytest.raises(KitError) as info:
            config_from_dict(_with(key, value if key != "data.sampling.class_weights" else {1: value}))
        assert str(info.value).startswith(key) and "must be" in str(info.value), (key, str(info.value))


@pytest.mark.parametrize("key, value, message", [
    ("model.drop_rate", 5, "model.drop_rate: must be in [0, 1), got 5.0"),
    ("sched.warmup_epochs", -3, "sched.warmup_epochs: must be >= 0, got -3"),
    ("train.grad_clip", -1, "train.grad_clip: must be > 0 and finite, got -1.0"),
    ("optim.lr", float("nan"), "optim.lr: must be > 0 and finite, got nan"),
    ("train.seed", -1, "train.seed: must be in [0, 4294967295], got -1"),
    ("data.folds", [0, -1], "data.folds[1]: must be >= 0, got -1"),
    ("data.sampling.class_weights", {1: -2}, "data.sampling.class_weights.1: must be >= 0 and finite, got -2.0"),
])
def test_out_of_range_numbers_name_the_key_and_the_range(key, value, message):
    from kitpkg.config import config_from_dict

    with pytest.raises(KitError) as info:
        config_from_dict(_with(key, value))
    assert str(info.value) == message


def test_a_class_weight_of_zero_leaves_that_class_out():
    from kitpkg.config import config_from_dict

    config = config_from_dict(_with("data.sampling.class_weights", {1: 0}))  # classes without a key weigh 1
    assert config.data.sampling.class_weights == {"1": 0.0}
