"""Every mistake a user makes with the training commands is one line on stderr and exit status 2, never a traceback
(through the real CLI entry point)."""
from __future__ import annotations

import pytest

from conftest import write_train_config
from kitpkg.cli import main


def _fails(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    return err


def test_config_that_is_a_folder(tmp_path, capsys):
    _fails(capsys, ["cv", "--config", str(tmp_path)], "is a folder; --config takes the experiment YAML file")


@pytest.mark.parametrize("text, expected", [("- a\n- b\n", "config must be a mapping of sections"),
                                            ("data: [unclosed\n", "not valid YAML"),
                                            ("just a string\n", "config must be a mapping of sections"),
                                            ("data: 5\n", "data: expected a mapping of DataConfig fields")])
def test_config_yaml_that_is_not_a_mapping_or_not_yaml(tmp_path, capsys, text, expected):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    _fails(capsys, ["cv", "--config", str(path)], expected)


def test_override_that_is_not_yaml(tfrecord_manifest, tmp_path, capsys):
    config = write_train_config(tmp_path, tfrecord_manifest)
    _fails(capsys, ["cv", "--config", str(config), "--set", "train.epochs=[2"], "the value is not valid YAML")


def test_run_dir_that_is_a_file(tfrecord_manifest, tmp_path, capsys):
    config = write_train_config(tmp_path, tfrecord_manifest)
    (tmp_path / "afile").write_text("x")
    for command in ("cv", "lr-find"):
        _fails(capsys, [command, "--config", str(config), "--run-dir", str(tmp_path / "afile")],
               "the run directory is a file")


@pytest.mark.parametrize("override, expected", [("sched.name=cosinee", "sched.name: timm has no scheduler"),
                                                ("optim.name=adamw2", "optim.name: timm has no optimizer"),
                                                ("model.name=resnet5O", "model.name: unknown timm model"),
                                                ("train.loss=ce", "train.loss: ce needs model.num_classes >= 2"),
                                                ("train.loss=hinge", "train.loss: expected one of")])
def test_unknown_names_before_anything_is_written(tfrecord_manifest, tmp_path, capsys, override, expected):
    config = write_train_config(tmp_path, tfrecord_manifest)
    run_dir = tmp_path / "run"
    for command in ("cv", "lr-find"):
        _fails(capsys, [command, "--config", str(config), "--run-dir", str(run_dir), "--set", override], expected)
    assert not run_dir.exists()


@pytest.mark.parametrize("args, expected", [(["--steps", "0"], "--steps: must be >= 2, got 0"),
                                            (["--min-lr", "1", "--max-lr", "0.1"], "need 0 < min-lr < max-lr"),
                                            (["--max-lr", "inf"], "need 0 < min-lr < max-lr, both finite"),
                                            (["--fold", "9"], "--fold 9: not a fold of")])
def test_lr_find_options(tfrecord_manifest, tmp_path, capsys, args, expected):
    config = write_train_config(tmp_path, tfrecord_manifest)
    _fails(capsys, ["lr-find", "--config", str(config), "--run-dir", str(tmp_path / "run"), *args], expected)


@pytest.mark.parametrize("override, expected", [
    ("data.sampling.class_weights={1: .inf}", "data.sampling.class_weights.1: must be >= 0 and finite, got inf"),
    ("model.drop_rate=5", "model.drop_rate: must be in [0, 1), got 5.0"),
    ("sched.warmup_epochs=-3", "sched.warmup_epochs: must be >= 0, got -3"),
    ("train.grad_clip=-1", "train.grad_clip: must be > 0 and finite, got -1.0"),
    ("optim.lr=.nan", "optim.lr: must be > 0 and finite, got nan"),
    ("train.focal_gamma=.inf", "train.focal_gamma: must be >= 0 and finite, got inf"),
    ("data.aug.gpu=[{name: affine, shift: .nan}]", "data.aug.gpu[0] (affine): shift=nan; must be in [0, 1]"),
    ("data.sampling.class_weights={7: 2}", "data.sampling.class_weights: key '7' is no class of"),
    ("data.sampling.class_weights={0: 0, 1: 0}", "data.sampling.class_weights: every class of"),
])
def test_bad_numbers_are_refused_before_anything_is_written(tfrecord_manifest, tmp_path, capsys, override, expected):
    config = write_train_config(tmp_path, tfrecord_manifest)
    run_dir = tmp_path / "run"
    for command in ("cv", "lr-find"):
        _fails(capsys, [command, "--config", str(config), "--run-dir", str(run_dir), "--set", override], expected)
    assert not run_dir.exists(), "no run directory (and no fold left 'running') for a config that cannot train"


def test_augment_preview_out_that_is_a_folder(tfrecord_manifest, tmp_path, capsys):
    config = write_train_config(tmp_path, tfrecord_manifest)
    _fails(capsys, ["augment-preview", "--config", str(config), "--out", str(tmp_path)],
           f"--out {tmp_path}: is a folder; give the PNG file to write")
