"""`train.precision: auto` / `train.channels_last: auto` per GPU generation, with faked devices (no GPU needed)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from kitpkg.config import config_from_dict
from kitpkg.task import task_of_outputs
from kitpkg.train import gpus
from kitpkg.train import trainer as T
from kitpkg.train.recipe import build_recipe

BINARY_DATA = SimpleNamespace(task=task_of_outputs(1))  # what build_recipe reads of a RunInputs


@pytest.mark.parametrize("name, capability, precision, channels_last, reason", [
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16-mixed", True, "H100 80GB HBM3 (sm 9.0): bf16-mixed + channels_last"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16-mixed", True, "A100-SXM4-40GB (sm 8.0): bf16-mixed + channels_last"),
    ("NVIDIA L4", (8, 9), "bf16-mixed", True, "L4 (sm 8.9): bf16-mixed + channels_last"),
    ("Tesla T4", (7, 5), "16-mixed", True, "T4 (sm 7.5): 16-mixed + channels_last"),
    ("Tesla V100-SXM2-16GB", (7, 0), "16-mixed", True, "V100-SXM2-16GB (sm 7.0): 16-mixed + channels_last"),
    ("Tesla P100-PCIE-16GB", (6, 0), "16-mixed", False, "P100-PCIE-16GB (sm 6.0): 16-mixed ("),
    ("NVIDIA GeForce GTX 1080", (6, 1), "32-true", False, "GeForce GTX 1080 (sm 6.1): 32-true ("),
    ("Tesla M60", (5, 2), "32-true", False, "M60 (sm 5.2): 32-true ("),
    (None, None, "32-true", False, "CPU: 32-true"),
])
def test_auto_choice_follows_the_gpu_generation(name, capability, precision, channels_last, reason):
    choice = T.gpu_choice(name, capability)
    assert (choice.precision, choice.channels_last) == (precision, channels_last)
    assert choice.reason.startswith(reason), choice.reason


def _fake_gpu(monkeypatch, name, capability):
    monkeypatch.setattr(gpus, "driver_gpus", lambda: None)  # no nvidia-smi/NVML: the capability comes from torch
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: "sm_50 sm_60 sm_61 sm_70 sm_75 sm_80 sm_86 sm_90".split())
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    # what the old `auto` asked: True on these GPUs (emulated bf16); the choice must not follow it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


class _RecordingTrainer:
    """Stands in for pl.Trainer (a real one would look for the faked GPU): keeps the arguments it got."""

    built = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _RecordingTrainer.built.append(kwargs)


def _config(**train):
    return config_from_dict({"data": {"shards": "unused", "image_size": 32}, "model": {"name": "test_resnet"},
                             "train": train})


@pytest.fixture
def fake_t4(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    monkeypatch.setattr(pl, "Trainer", _RecordingTrainer)
    monkeypatch.setattr(T, "_ANNOUNCED", set())
    _RecordingTrainer.built = []


def test_trainer_build_uses_the_generation_choice_and_says_so_once(fake_t4, capsys):
    from kitpkg.train.cv import make_module

    recipe = build_recipe(_config(), BINARY_DATA, None)
    for _ in range(3):  # one trainer per fold (and one for the test predictions): the reason is printed once
        T.build_trainer(recipe)
    assert [k["precision"] for k in _RecordingTrainer.built] == ["16-mixed"] * 3
    lines = [line for line in capsys.readouterr().out.splitlines() if "sm 7.5" in line]
    assert len(lines) == 1 and lines[0].startswith("kitpkg: T4 (sm 7.5): 16-mixed + channels_last"), lines
    assert make_module(recipe, load_pretrained=False).channels_last is True


def test_explicit_values_are_kept_and_the_reason_says_so(fake_t4, capsys):
    from kitpkg.train.cv import make_module

    recipe = build_recipe(_config(precision="32", channels_last=False), BINARY_DATA, None)
    T.build_trainer(recipe)
    assert _RecordingTrainer.built[-1]["precision"] == "32-true"
    assert make_module(recipe, load_pretrained=False).channels_last is False
    out = capsys.readouterr().out
    assert "T4 (sm 7.5): 32-true (as set in the config; auto would be 16-mixed + channels_last)" in out, out


def test_gpu_generations_below_tensor_cores_train_in_fp32_without_channels_last(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA GeForce GTX 1080", (6, 1))
    choice = T.resolve_device(_config())
    assert (choice.precision, choice.channels_last) == ("32-true", False)
    assert T.resolve_device(_config(precision="16-mixed", channels_last=True))[:2] == ("16-mixed", True)
    assert T.resolve_device(_config(accelerator="cpu"))[:2] == ("32-true", False)  # GPU present, CPU asked for
