"""The GPU's capability without a CUDA context (nvidia-smi faked), CUDA_VISIBLE_DEVICES, and GPUs torch cannot drive."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from kitpkg.config import config_from_dict
from kitpkg.errors import KitError
from kitpkg.train import gpus as G
from kitpkg.train import trainer as T

TWO_T4 = ("Tesla T4, 7.5, GPU-aaaa1111-0000-0000-0000-000000000000\n"
          "Tesla T4, 7.5, GPU-bbbb2222-0000-0000-0000-000000000000\n")
MIXED = ("NVIDIA A100-SXM4-40GB, 8.0, GPU-aaaa\n"
         "NVIDIA GeForce GTX 1080, 6.1, GPU-bbbb\n"
         "Tesla V100-SXM2-16GB, 7.0, GPU-cccc\n")
CU126 = "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90".split()  # PyTorch's CUDA 12.6 wheels: Pascal via sm_60
CU128 = "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120".split()  # its CUDA 12.8+ wheels: Turing and newer


def test_parser_reads_every_gpu_in_the_drivers_order():
    gpus = G.parse_nvidia_smi(MIXED)
    assert [(g.name, g.capability, g.uuid) for g in gpus] == [
        ("NVIDIA A100-SXM4-40GB", (8, 0), "GPU-aaaa"), ("NVIDIA GeForce GTX 1080", (6, 1), "GPU-bbbb"),
        ("Tesla V100-SXM2-16GB", (7, 0), "GPU-cccc")]
    assert G.parse_nvidia_smi("Odd, Name, Inc GPU, 9.0, GPU-x\n")[0][:2] == ("Odd, Name, Inc GPU", (9, 0))
    with pytest.raises(ValueError):
        G.parse_nvidia_smi("Tesla T4, [N/A]\n")


@pytest.mark.parametrize("cvd, uuids", [
    (None, ["GPU-aaaa", "GPU-bbbb", "GPU-cccc"]),
    ("2", ["GPU-cccc"]),
    ("2,0", ["GPU-cccc", "GPU-aaaa"]),  # CUDA's order is the variable's order
    ("GPU-bbbb", ["GPU-bbbb"]),
    ("GPU-cc,GPU-aaaa", ["GPU-cccc", "GPU-aaaa"]),  # a UUID prefix is enough when it names one GPU
    ("0,7,2", ["GPU-aaaa"]),  # like CUDA: the list ends at the first entry that names no GPU
    ("GPU-", []),  # a prefix of several GPUs names none of them
    ("", []),
    ("-1", []),
])
def test_cuda_visible_devices_picks_the_rows(cvd, uuids):
    assert [g.uuid for g in G.visible(G.parse_nvidia_smi(MIXED), cvd)] == uuids


def _fake_smi(monkeypatch, stdout="", returncode=0, raises=None):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[0] != "nvidia-smi":
            raise AssertionError(f"unexpected command {cmd}")
        if raises:
            raise raises
        return subprocess.CompletedProcess(cmd, returncode, stdout, "")

    monkeypatch.setattr(G.subprocess, "run", run)
    return calls


def _torch_must_not_touch_the_gpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("CUDA initialised in this process")

    for fn in ("is_available", "device_count", "current_device", "get_device_capability", "get_device_name",
               "get_device_properties", "_lazy_init", "init", "set_device"):
        monkeypatch.setattr(torch.cuda, fn, refuse)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)  # a CUDA build, even under a CPU one


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def _config(**train):
    return config_from_dict({"data": {"shards": "unused", "image_size": 32}, "model": {"name": "test_resnet"},
                             "train": train})


def test_a_t4_gets_its_precision_without_cuda_in_this_process(monkeypatch, no_nvml):
    calls = _fake_smi(monkeypatch, TWO_T4)
    _torch_must_not_touch_the_gpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU128)
    choice = T.resolve_device(_config(strategy="ddp_notebook", devices=2))
    assert (choice.precision, choice.channels_last) == ("16-mixed", True)
    assert choice.reason.startswith("T4 (sm 7.5): 16-mixed + channels_last"), choice.reason
    assert len(calls) == 1, "the driver is asked once per device choice"


def test_a_cpu_build_of_torch_or_no_visible_gpu_trains_on_the_cpu(monkeypatch, no_nvml):
    _fake_smi(monkeypatch, TWO_T4)
    _torch_must_not_touch_the_gpu(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert T.resolve_device(_config()).reason == "CPU: 32-true"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert T.resolve_device(_config()).reason == "CPU: 32-true"


def test_the_visible_gpu_decides_the_precision(monkeypatch, no_nvml):
    _fake_smi(monkeypatch, MIXED)
    _torch_must_not_touch_the_gpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU126)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # mixed GPUs: the driver's order is CUDA's only then
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cccc")
    assert T.resolve_device(_config()).reason.startswith("V100-SXM2-16GB (sm 7.0): 16-mixed")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert T.resolve_device(_config()).reason.startswith("A100-SXM4-40GB (sm 8.0): bf16-mixed")


def _fake_torch_gpu(monkeypatch, name, capability):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)


@pytest.mark.parametrize("failure", [dict(raises=FileNotFoundError("nvidia-smi")),
                                     dict(raises=subprocess.TimeoutExpired("nvidia-smi", 10)),
                                     dict(returncode=6, stdout="No devices were found"),
                                     dict(stdout='Field "compute_cap" is not a valid field to query.')])
def test_without_nvidia_smi_or_nvml_torch_answers_in_the_training_process(monkeypatch, no_nvml, failure):
    calls = _fake_smi(monkeypatch, **failure)
    _fake_torch_gpu(monkeypatch, "Tesla T4", (7, 5))
    assert G.training_gpus("auto") == [G.Gpu("Tesla T4", (7, 5))]
    assert calls and calls[0][0] == "nvidia-smi"


def test_mig_instances_are_asked_of_torch(monkeypatch, no_nvml):
    _fake_smi(monkeypatch, "NVIDIA A100-SXM4-40GB, 8.0, GPU-aaaa\n")
    _fake_torch_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", (8, 0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0f1e2d3c-0000-0000-0000-000000000000")
    assert G.training_gpus() == [G.Gpu("NVIDIA A100-SXM4-40GB MIG 1g.5gb", (8, 0))]


def test_without_them_a_fork_strategy_asks_torch_in_a_child_process(monkeypatch, no_nvml):
    _torch_must_not_touch_the_gpu(monkeypatch)
    children = []

    def run(cmd, **kwargs):
        if cmd[0] == "nvidia-smi":
            raise FileNotFoundError(cmd[0])
        children.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, json.dumps(["Tesla T4", [7, 5]]) + "\n", "")

    monkeypatch.setattr(G.subprocess, "run", run)
    assert G.training_gpus("ddp_notebook") == [G.Gpu("Tesla T4", (7, 5))]
    assert len(children) == 1 and children[0][0] == sys.executable


@pytest.mark.parametrize("capability, arch_list, supported", [
    ((6, 1), CU126, True),  # the 12.6 build has sm_60, not sm_61
    ((6, 0), CU126, True),
    ((6, 1), CU128, False),
    ((6, 1), ["sm_60", "sm_70"], True),  # an sm_60 cubin runs on 6.1 (same major, higher minor)
    ((6, 0), ["sm_61", "sm_70"], False),  # but not the other way round
    ((6, 1), ["sm_75", "compute_60"], True),  # PTX for 6.0 is compiled by the driver for 6.1
    ((6, 1), ["sm_75", "compute_70"], False),  # PTX for a higher capability is not
    ((9, 0), ["sm_90a"], True),
    ((8, 6), ["sm_80"], True),
    ((8, 0), ["sm_86"], False),
    ((7, 5), [], True),  # no arch flags: not a CUDA build, nothing to say
])
def test_arch_list_support(capability, arch_list, supported):
    assert G.arch_supported(capability, arch_list) is supported


def test_a_gtx_1080_under_a_build_without_pascal_is_refused_with_one_line(monkeypatch, no_nvml):
    _fake_smi(monkeypatch, "NVIDIA GeForce GTX 1080, 6.1, GPU-1080\n")
    _torch_must_not_touch_the_gpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU128)
    with pytest.raises(KitError) as info:
        T.resolve_device(_config())
    message = str(info.value)
    assert "\n" not in message
    for part in ("NVIDIA GeForce GTX 1080 (sm 6.1)", torch.__version__, "sm_75 sm_80", "whl/cu126"):
        assert part in message, message
    assert "torch==2.9.1 torchvision --index-url" in G.unsupported_gpu_message(G.Gpu("P100", (6, 0)), CU128,
                                                                                 "2.9.1+cu128")
    assert "'torch<2.15' torchvision" in G.unsupported_gpu_message(G.Gpu("P100", (6, 0)), CU128, "2.16.0+cu132")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU126)
    assert T.resolve_device(_config()).precision == "32-true"


def test_compile_below_sm_70_is_refused_with_one_line(monkeypatch, no_nvml):
    _fake_smi(monkeypatch, "Tesla P100-PCIE-16GB, 6.0, GPU-p100\n")
    _torch_must_not_touch_the_gpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU126)
    with pytest.raises(KitError, match=r"train\.compile: true needs sm 7\.0\+ .*P100-PCIE-16GB is sm 6\.0"):
        T.resolve_device(_config(compile=True))
    assert T.resolve_device(_config(compile=False)).precision == "16-mixed"
    _fake_smi(monkeypatch, TWO_T4)
    assert T.resolve_device(_config(compile=True)).precision == "16-mixed"
