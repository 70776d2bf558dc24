"""The visible GPUs' names and compute capabilities without a CUDA context; whether the installed torch drives them.

Reading the capability through torch (`get_device_capability`) initialises CUDA in the calling process; in a notebook
that makes Lightning's fork launcher (`ddp_notebook`) refuse to start. So the capability comes from
`nvidia-smi --query-gpu=…` or NVML (`pynvml`, when importable), mapped through CUDA_VISIBLE_DEVICES; torch is asked only
when neither answers, and then in a child process where the strategy forks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List, NamedTuple, Optional, Sequence, Tuple

from ..errors import KitError

NVIDIA_SMI_TIMEOUT_S = 10
FORK_STRATEGIES = ("ddp_notebook", "ddp_fork")  # Lightning launches these by fork: the parent must keep CUDA untouched
TRITON_MIN_CAPABILITY = (7, 0)
# Since torch 2.8 only the CUDA 12.6 wheels have Maxwell/Pascal kernels (TORCH_CUDA_ARCH_LIST 5.0;6.0;7.0;…: sm_60 also
# runs 6.1); 2.14 keeps cu126 as "legacy", 2.15 plans to drop it (pytorch/pytorch#157517, #190385).
LAST_TORCH_WITH_CU126 = (2, 14)
CU126_INDEX = "https://download.pytorch.org/whl/cu126"


class Gpu(NamedTuple):
    """One GPU as the driver lists it."""

    name: str
    capability: Tuple[int, int]
    uuid: str = ""


def parse_nvidia_smi(text: str) -> List[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,compute_cap,uuid --format=csv,noheader` output, in its order."""
    gpus = []
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.rsplit(",", 2)]  # a name may hold commas; the last two fields cannot
        if len(fields) != 3:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        name, cap, uuid = fields
        major, minor = cap.split(".")
        gpus.append(Gpu(name, (int(major), int(minor)), uuid))
    return gpus


def visible(gpus: Sequence[Gpu], cuda_visible_devices: Optional[str]) -> List[Gpu]:
    """The GPUs CUDA shows this process, in CUDA's order: CUDA_VISIBLE_DEVICES by index or (prefix of) GPU UUID.

    Like CUDA, the list ends at the first entry that names no GPU; an unset variable shows all of them."""
    if cuda_visible_devices is None:
        return list(gpus)
    shown: List[Gpu] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        if entry.lstrip("-").isdigit():
            index = int(entry)
            match = [gpus[index]] if 0 <= index < len(gpus) else []
        else:
            match = [g for g in gpus if entry.startswith("GPU-") and g.uuid.startswith(entry)]
        if len(match) != 1 or match[0] in shown:
            break
        shown.append(match[0])
    return shown


def _nvidia_smi() -> Optional[List[Gpu]]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,uuid", "--format=csv,noheader"],
                   capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
        return parse_nvidia_smi(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):  # missing, hung, or a driver without compute_cap
        return None


def _nvml() -> Optional[List[Gpu]]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            return [Gpu(_text(pynvml.nvmlDeviceGetName(h)), tuple(pynvml.nvmlDeviceGetCudaComputeCapability(h)),
                        _text(pynvml.nvmlDeviceGetUUID(h))) for h in handles]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  any NVML failure (no driver, old library) means: ask someone else
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def driver_gpus() -> Optional[List[Gpu]]:
    """All GPUs from nvidia-smi, else NVML; None when neither answers. Never creates a CUDA context."""
    found = _nvidia_smi()
    return found if found is not None else _nvml()


def _ordered_like_cuda(gpus: Sequence[Gpu]) -> bool:
    # the driver lists by PCI bus, CUDA fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID: the same only if all alike
    return os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" or len({(g.name, g.capability) for g in gpus}) <= 1


_CHILD_QUERY = ("import json, torch\n"
                "if not torch.cuda.is_available():\n    print('null')\n"
                "else:\n    i = torch.cuda.current_device()\n"
                "    print(json.dumps([torch.cuda.get_device_name(i), list(torch.cuda.get_device_capability(i))]))")


def _torch_gpu(strategy: str) -> Optional[Gpu]:
    """Device 0 through torch (None without one): in a child process for fork strategies (CUDA stays untouched
    here), else here."""
    if strategy in FORK_STRATEGIES:
        done = subprocess.run([sys.executable, "-c", _CHILD_QUERY], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise KitError(f"could not read the GPU's compute capability (nvidia-smi, pynvml and a torch child "
                           f"process all failed): {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        found = json.loads(done.stdout)
        return None if found is None else Gpu(found[0], (found[1][0], found[1][1]))
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return Gpu(torch.cuda.get_device_name(index), (major, minor))


def _driver_visible() -> Optional[List[Gpu]]:
    """The visible GPUs from the driver's list; None when it cannot tell (no tool answered, MIG instances)."""
    found = driver_gpus()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if found is None or (cvd is not None and "MIG-" in cvd):  # MIG instances are not rows of nvidia-smi's GPU list
        return None
    return visible(found, cvd)


def training_gpus(strategy: str = "auto") -> List[Gpu]:
    """The GPUs this process will train on, first the one a single-device run uses; [] without one. One driver
    query; torch only as a fallback: torch.cuda.is_available() initialises CUDA's driver in this process (PyTorch's
    "poison fork"), which a forked ddp_notebook worker then cannot use."""
    import torch

    if not torch.backends.cuda.is_built():
        return []
    shown = _driver_visible()
    if shown is None or (shown and not _ordered_like_cuda(shown)):
        gpu = _torch_gpu(strategy)
        return [gpu] if gpu is not None else []
    return shown


def visible_count() -> int:
    """How many GPUs this process sees, without a CUDA context: the driver's list through CUDA_VISIBLE_DEVICES, else
    torch's count (NVML-based in the torch versions the kit supports: no CUDA context either)."""
    import torch

    if not torch.backends.cuda.is_built():
        return 0
    shown = _driver_visible()
    return len(shown) if shown is not None else torch.cuda.device_count()


def arch_supported(capability: Tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a build with these arch flags runs on the GPU (`torch.cuda.get_arch_list()`'s spelling).

    An sm_XY cubin runs on X.Y…X.9 (sm_XYa only on X.Y); compute_XY PTX is compiled by the driver (JIT) for any
    capability ≥ X.Y. An empty list (not a CUDA build) says nothing."""
    if not arch_list:
        return True
    device = capability[0] * 10 + capability[1]
    for arch in arch_list:
        kind, _, code = arch.partition("_")
        exact = code.endswith("a")  # arch-specific (sm_90a): that capability only; sm_100f: its family
        cc = int(code.rstrip("af"))
        if kind == "compute" and device >= cc:
            return True
        if kind == "sm" and (device == cc or (not exact and device // 10 == cc // 10 and device > cc)):
            return True
    return False


def unsupported_gpu_message(gpu: Gpu, arch_list: Sequence[str], torch_version: str) -> Optional[str]:
    """One line when the installed torch has no kernels for this GPU (None when it has), naming what to install."""
    if arch_supported(gpu.capability, arch_list):
        return None
    major, minor = gpu.capability
    advice = (f"install PyTorch's CUDA 12.6 build, the one with Maxwell/Pascal kernels: {_cu126_install(torch_version)}"
              if major in (5, 6) else "install a torch build whose torch.cuda.get_arch_list() covers it "
                                      "(https://pytorch.org/get-started/previous-versions/)")
    return (f"{gpu.name} (sm {major}.{minor}) has no kernels in the installed torch {torch_version} (built for "
            f"{' '.join(arch_list)}); {advice}")


def _cu126_install(torch_version: str) -> str:
    base = torch_version.split("+")[0]
    try:
        same = tuple(int(p) for p in base.split(".")[:2]) <= LAST_TORCH_WITH_CU126
    except ValueError:
        same = False
    pin = f"torch=={base}" if same else f"'torch<{LAST_TORCH_WITH_CU126[0]}.{LAST_TORCH_WITH_CU126[1] + 1}'"
    return f"pip install {pin} torchvision --index-url {CU126_INDEX}"


def compile_refusal(gpu: Gpu) -> Optional[str]:
    """One line refusing `train.compile: true` below Triton's minimum (sm 7.0); None where it can run."""
    if gpu.capability >= TRITON_MIN_CAPABILITY:
        return None
    major, minor = gpu.capability
    return (f"train.compile: true needs sm 7.0+ (Triton's minimum); {gpu.name} is sm {major}.{minor}: "
            f"set train.compile: false")


def check_gpus(gpus: Sequence[Gpu], compile_model: bool) -> None:
    """Raise KitError before training when the installed torch cannot drive a GPU, or compile is asked below sm 7.0.

    `torch.cuda.get_arch_list()` reads the build's compiled flags (torch._C._cuda_getArchFlags): no CUDA context."""
    import torch

    for gpu in gpus:
        problem = unsupported_gpu_message(gpu, torch.cuda.get_arch_list(), torch.__version__)
        problem = problem or (compile_refusal(gpu) if compile_model else None)
        if problem:
            raise KitError(problem)
