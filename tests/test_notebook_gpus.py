"""Two GPUs from a notebook: nothing in the notebook's process initialises CUDA (faked here so that it raises), folds
go to one worker process per GPU with their progress printed in the cell, and ddp_notebook is used only when asked."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from conftest import write_train_config
from kitpkg import notebook as nb
from kitpkg.config import config_from_dict, load_config
from kitpkg.notebook import bootstrap
from kitpkg.train import gpus as G
from kitpkg.train.cv import run_cv
from kitpkg.train.parallel import gpus_for_folds
from kitpkg.train.runstate import RunState

TWO_T4 = ("Tesla T4, 7.5, GPU-aaaa1111-0000-0000-0000-000000000000\n"
          "Tesla T4, 7.5, GPU-bbbb2222-0000-0000-0000-000000000000\n")


class CudaInitialised(RuntimeError):
    pass


@pytest.fixture
def two_t4s_cuda_refused(monkeypatch):
    """The driver lists two T4s and CUDA's lazy initialisation raises in this (the notebook's) process."""
    monkeypatch.setattr(G, "driver_gpus", lambda: G.parse_nvidia_smi(TWO_T4))
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: "sm_75 sm_80 sm_86 sm_90".split())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def refuse(*args, **kwargs):
        raise CudaInitialised("CUDA initialised in the notebook process: ddp_notebook could not fork any more")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "init", refuse)
    yield
    assert not torch.cuda.is_initialized()


def _config(**train):
    return config_from_dict({"data": {"shards": "unused"}, "train": train})


def test_folds_go_one_per_gpu_only_when_devices_and_strategy_are_auto(two_t4s_cuda_refused, monkeypatch):
    assert gpus_for_folds(_config()) == 2
    assert gpus_for_folds(_config(devices=2, strategy="ddp_notebook")) == 0  # DDP when asked
    assert gpus_for_folds(_config(devices=1)) == 0  # one GPU, folds one after another, when asked
    assert gpus_for_folds(_config(accelerator="cpu")) == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a worker: one GPU of its own
    assert gpus_for_folds(_config()) == 0


@pytest.mark.slow
def test_the_notebook_steps_run_without_cuda_and_folds_train_one_per_gpu(two_t4s_cuda_refused, finished_run,
                                                                           tfrecord_manifest, tmp_path, capsys):
    reference_config, reference_dir, _ = finished_run
    env = bootstrap.setup("p", environ={"KITPKG_PLATFORM": "local", "KITPKG_LOCAL_ROOT": str(tmp_path)}, quiet=True)
    base = write_train_config(tmp_path, tfrecord_manifest)
    config = nb.experiment(env, tfrecord_manifest.root, "two_gpus", base=base)
    assert config.train.devices == "auto" and config.train.strategy == "auto"

    result = run_cv(config)  # here: two worker processes (one per "GPU"; on this machine they train on the CPU)

    out = capsys.readouterr().out
    assert "fold 0 -> worker 0 (GPU 0)" in out and "fold 1 -> worker 1 (GPU 1)" in out
    # each worker's progress is printed by this process, where a notebook cell shows it, a line per validation
    for k in (0, 1, 2):
        assert f"[fold {k}] fold {k} epoch 2/2: val_auc" in out
    assert RunState.read(result.run_dir).done_folds() == [0, 1, 2] and result.mean is not None
    for name in ("oof.csv", "test_predictions.csv"):  # the same numbers as folds trained one after another
        ours, reference = (pd.read_csv(d / name, dtype={"id": str}) for d in (result.run_dir, reference_dir))
        assert list(ours["id"]) == list(reference["id"])
        assert (ours["prediction"] - reference["prediction"]).abs().max() <= 1e-6, name

    # the LR finder trains too: with GPUs visible it runs in a spawned child, this process stays CUDA-free
    sweep = copy.deepcopy(config)
    lr = nb.find_lr(sweep, num_training=5)
    assert lr is None or (lr > 0 and sweep.optim.lr == lr)
    assert (result.run_dir / "lr_find.json").exists()
    assert load_config(reference_config).optim.lr == config.optim.lr  # the run's own config untouched
