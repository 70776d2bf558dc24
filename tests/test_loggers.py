"""train.logger: Lightning's CSV, TensorBoard and W&B loggers per fold, with the config as hyperparameters and the
figures of the kit's metrics.csv; W&B offline without internet (never the network here), one line per missing
package, unknown names refused at load."""
from __future__ import annotations

import sys

import pandas as pd
import pytest
import yaml

from conftest import write_train_config
from kitpkg.config import config_from_dict, config_hash, load_config
from kitpkg.errors import KitError
from kitpkg.train import loggers as L


def test_unknown_logger_is_refused_at_load_naming_the_key_and_the_choices():
    with pytest.raises(KitError, match=r"^train\.logger\[1\]: unknown logger 'mlflow'; use csv, tensorboard, "
                                       r"wandb$"):
        config_from_dict({"data": {"shards": "s"}, "train": {"logger": ["csv", "mlflow"]}})


def test_logger_keys_change_no_hash():
    base = config_from_dict({"data": {"shards": "s"}})
    logged = config_from_dict({"data": {"shards": "s"}, "train": {"logger": ["csv", "wandb"]}})
    assert config_hash(logged) == config_hash(base)
    assert L.trainer_logging(base, "runs/x", 0) == {}  # default: no logger, Trainer(logger=False) as before
    assert L.trainer_logging(logged, None, 0) == {}  # no run directory (lr-find, predict): no logger run


@pytest.mark.parametrize("kind, modules, package", [("tensorboard", ("tensorboard", "tensorboardX"), "tensorboard"),
                                                    ("wandb", ("wandb",), "wandb")])
def test_a_missing_package_is_one_line_naming_the_pip_install(monkeypatch, tmp_path, kind, modules, package):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    config = config_from_dict({"data": {"shards": "s"}, "train": {"logger": ["csv", kind]}})
    with pytest.raises(KitError) as err:
        L.fold_loggers(config, tmp_path / "run", 0, environ={}, online=lambda: False)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"train.logger: {kind} needs the {package} package: pip install {package}")


def test_wandb_runs_offline_only_without_internet_unless_wandb_mode_is_set():
    def no_call():
        raise AssertionError("WANDB_MODE set: the internet is not probed")

    assert L.wandb_mode({}, lambda: False) == "offline"
    assert L.wandb_mode({}, lambda: True) is None
    assert L.wandb_mode({"WANDB_MODE": "online"}, no_call) is None  # the user's choice, read by wandb itself


def test_a_fold_keeps_its_wandb_run_id_across_restarts_and_runs_do_not_share_one(tmp_path):
    pytest.importorskip("wandb")
    config = config_from_dict({"data": {"shards": "s"}, "train": {"logger": ["wandb"]}})
    more_workers = config_from_dict({"data": {"shards": "s", "num_workers": 8}, "train": {"logger": ["wandb"]}})
    other = config_from_dict({"data": {"shards": "s"}, "optim": {"lr": 0.01}, "train": {"logger": ["wandb"]}})
    run = tmp_path / "b4_384"
    (logger,) = L.fold_loggers(config, run, 2, environ={"WANDB_MODE": "offline"})
    assert logger.version == L.wandb_id(run, config, 2)
    assert L.wandb_id(run, more_workers, 2) == logger.version  # a resume with another non-result key: same run
    assert len({logger.version, L.wandb_id(run, config, 1), L.wandb_id(tmp_path / "b4_512", config, 2),
                L.wandb_id(run, other, 2)}) == 4


@pytest.mark.slow
def test_csv_tensorboard_and_wandb_log_each_fold_as_metrics_csv_does(tmp_path, tfrecord_manifest, monkeypatch,
                                                                      capsys):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kitpkg.train.cv import run_cv

    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KITPKG_INTERNET", "0")  # env.has_internet answers "no" without trying the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = load_config(write_train_config(tmp_path, tfrecord_manifest),
                         ["train.logger=[csv, tensorboard, wandb]", "data.folds=[0]"])
    import wandb

    runs = []
    init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(init(**kw)) or runs[-1])  # the real one, watched
    run_dir = tmp_path / "b0_64"
    run_cv(config, run_dir)
    assert "W&B logs offline; upload them later with `wandb sync" in capsys.readouterr().out

    kit = pd.read_csv(run_dir / "fold0" / "metrics.csv")  # the kit's own record, as without loggers
    assert list(kit.columns) == ["epoch", "step", "lr", "train_loss", "val_loss", "val_auc"] and len(kit) == 2
    logs = run_dir / "logs"
    csv_dir = logs / "csv" / "fold0" / "version_0"
    rows = pd.read_csv(csv_dir / "metrics.csv").dropna(subset=["val_loss"]).reset_index(drop=True)
    assert list(rows["epoch"]) == list(kit["epoch"])
    for key in ("val_loss", "val_auc"):
        assert list(rows[key]) == list(kit[key])  # the very values metrics.csv holds
    assert rows["lr"].tolist() == pytest.approx(kit["lr"].tolist(), rel=1e-6)  # float32 in Lightning's logging
    assert rows["train_loss_epoch"].tolist() == pytest.approx(kit["train_loss"].tolist(), rel=1e-6)

    tb_dir = logs / "tensorboard" / "fold0"
    events = EventAccumulator(str(tb_dir))
    events.Reload()
    assert [e.value for e in events.Scalars("val_loss")] == pytest.approx(kit["val_loss"].tolist(), rel=1e-6)
    assert [e.value for e in events.Scalars("lr")] == pytest.approx(kit["lr"].tolist(), rel=1e-6)
    for hparams in (csv_dir / "hparams.yaml", tb_dir / "hparams.yaml"):
        params = yaml.safe_load(hparams.read_text())
        assert params["train.epochs"] == 2 and params["optim.lr"] == 0.003 and params["fold"] == 0
        assert params["config_hash"] == config_hash(config) and params["data.shards"] is None  # no paths

    (run,) = runs  # one W&B run for the fold, named by it, grouped by the run directory, finished
    assert (run.name, run.group, run.id, run.project) == ("fold0", "b0_64", L.wandb_id(run_dir, config, 0), "kitpkg")
    assert run.offline and run.config["train.epochs"] == 2 and run.config["fold"] == 0
    assert wandb.run is None  # finished: the next fold's logger starts its own run
    (offline,) = (logs / "wandb").glob(f"offline-run-*-{run.id}")  # offline: KITPKG_INTERNET=0, WANDB_MODE unset
    (record,) = offline.glob("*.wandb")
    assert repr(float(kit["val_loss"].iloc[-1])).encode() in record.read_bytes()  # metrics.csv's value, logged


def test_setup_says_wandb_runs_offline_without_internet_and_how_to_sync(tmp_path, monkeypatch):
    from kitpkg.notebook import bootstrap

    monkeypatch.setattr(bootstrap.env, "importable", lambda module: module == "wandb")  # as on Kaggle's image
    for internet in ("0", "1"):
        environ = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KITPKG_KAGGLE_ROOT": str(tmp_path), "KITPKG_INTERNET": internet}
        env = bootstrap.setup("mel", environ=environ, quiet=True)
        rows = [line for line in env.summary().splitlines() if "w&b" in line]
        expected = [f"offline (no internet); upload later: wandb sync {env.run_dir}/<run>/logs/wandb/offline-run-*"]
        assert [row.split(" : ", 1)[1] for row in rows] == (expected if internet == "0" else [])
