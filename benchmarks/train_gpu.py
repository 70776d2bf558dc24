"""Training throughput of efficientnet_b4 at 384 px: fp32 eager NCHW vs the kit's default GPU recipe, in one run.

The recipe is what `train.precision: auto` + `train.channels_last: auto` choose for this GPU's generation, printed
with the reason (bf16-mixed from sm 8.0, 16-mixed on sm 7.x and the P100, 32-true on GTX 10xx; channels_last from
sm 7.0; see kitpkg/train/trainer.py), optionally + torch.compile (`--compile`). Synthetic uint8 batches already on the
GPU go through the kit's own KitModule (on-device normalisation + augmentation, BCE loss, AdamW), so the figures
measure the model step, not the loader. Prints images/s for each variant and the ratio. Not part of CI (the tests
only smoke-run it on the CPU, `--device cpu`, to keep the script working):
    python benchmarks/train_gpu.py [--batch 32] [--steps 30] [--compile]
"""
from __future__ import annotations

import argparse
import sys
import time


def _module(channels_last: bool, size: int):
    from types import SimpleNamespace

    from kitpkg.config import config_from_dict
    from kitpkg.task import make_task
    from kitpkg.train.model import KitModule
    from kitpkg.train.recipe import build_recipe

    cfg = config_from_dict({"data": {"shards": "synthetic", "image_size": size},
                            "model": {"name": "efficientnet_b4", "pretrained": False}})
    module = KitModule(build_recipe(cfg, SimpleNamespace(task=make_task("binary", 1)), None))
    module.channels_last = channels_last
    return module


def measure(precision: str, channels_last: bool, compile_: bool, batch: int, steps: int, warmup: int,
            device: str = "cuda", size: int = 384) -> float:
    """Images/s of forward + backward + AdamW step for one variant."""
    import torch

    torch.manual_seed(0)
    module = _module(channels_last, size).to(device).train()
    if channels_last:
        module.model.to(memory_format=torch.channels_last)
    net = torch.compile(module.model) if compile_ else module.model
    from kitpkg.train.gpu_augment import GpuAugment

    augment = GpuAugment(module.recipe.stages.gpu)  # what training runs on the device before each step
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    target = torch.randint(0, 2, (batch,), device=device).float()
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = module.loss_fn(net(module.preprocess(augment.augment(images))), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn autotune, compile)")
    parser.add_argument("--compile", action="store_true", help="also time the recipe + torch.compile")
    parser.add_argument("--size", type=int, default=384, help="image side")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run, not a figure")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("train_gpu: torch is not installed; nothing to measure")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_gpu: no CUDA GPU here; run this on a GPU machine (Colab/Kaggle/…) — nothing measured")
        return 0
    from kitpkg.train.trainer import detect_device

    torch.backends.cudnn.benchmark = True
    on_gpu = args.device == "cuda"
    choice = detect_device(on_gpu)
    where = torch.cuda.get_device_name(0) if on_gpu else "CPU (smoke run)"
    print(f"{where}: efficientnet_b4, {args.size} px, batch {args.batch}, {args.steps} steps")
    print(f"auto recipe: {choice.reason}")
    variants = [("fp32 eager NCHW", "32-true", False, False),
                (f"kit default ({choice.recipe})", choice.precision, choice.channels_last, False)]
    if args.compile:
        variants.append(("kit default + torch.compile", choice.precision, choice.channels_last, True))
    rates = {}
    for name, precision, cl, comp in variants:
        warmup = args.warmup + (10 if comp else 0)
        rates[name] = measure(precision, cl, comp, args.batch, args.steps, warmup, args.device, args.size)
        if on_gpu:
            torch.cuda.empty_cache()
        print(f"{name:45s} {rates[name]:8.1f} img/s")
    base = rates[variants[0][0]]
    for name in list(rates)[1:]:
        print(f"{name}: {rates[name] / base:.2f}× fp32 eager NCHW")
    return 0


if __name__ == "__main__":
    sys.exit(main())
