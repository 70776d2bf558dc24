"""Training throughput of efficientnet_b4 at 384 px: fp32 eager NCHW vs the kit's default GPU recipe, in one run.

The recipe is what `train.precision: auto` + `train.channels_last: auto` give on a GPU (bf16-mixed where supported,
else 16-mixed; channels_last), optionally + torch.compile (`--compile`). Synthetic uint8 batches already on the GPU
go through the kit's own KitModule (on-device normalisation + augmentation, BCE loss, AdamW), so the figures measure the
model step, not the loader. Prints images/s for each variant and the ratio. Not part of CI:
    python benchmarks/train_gpu.py [--batch 32] [--steps 30] [--compile]
"""
from __future__ import annotations

import argparse
import sys
import time


def _module(channels_last: bool):
    from kitpkg.config import config_from_dict
    from kitpkg.train.model import KitModule, portable_config

    cfg = config_from_dict({"data": {"shards": "synthetic", "image_size": 384},
                            "model": {"name": "efficientnet_b4", "pretrained": False}})
    module = KitModule(portable_config(cfg), num_classes=1)
    module.channels_last = channels_last
    return module


def measure(precision: str, channels_last: bool, compile_: bool, batch: int, steps: int, warmup: int) -> float:
    """Images/s of forward + backward + AdamW step for one variant."""
    import torch

    torch.manual_seed(0)
    module = _module(channels_last).cuda().train()
    if channels_last:
        module.model.to(memory_format=torch.channels_last)
    net = torch.compile(module.model) if compile_ else module.model
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch, 3, 384, 384), dtype=torch.uint8, device="cuda")
    target = torch.randint(0, 2, (batch,), device="cuda").float()
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)

    def step():
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = module.loss_fn(net(module.preprocess(module.augment(images))), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    rate = batch * steps / (time.perf_counter() - start)
    del module, net, optimizer
    torch.cuda.empty_cache()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn autotune, compile)")
    parser.add_argument("--compile", action="store_true", help="also time the recipe + torch.compile")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("train_gpu: torch is not installed; nothing to measure")
        return 0
    if not torch.cuda.is_available():
        print("train_gpu: no CUDA GPU here; run this on a GPU machine (Colab/Kaggle/…) — nothing measured")
        return 0
    from kitpkg.train.model import resolve_precision

    torch.backends.cudnn.benchmark = True
    recipe = resolve_precision("auto", on_gpu=True)
    print(f"GPU: {torch.cuda.get_device_name(0)}; efficientnet_b4, 384 px, batch {args.batch}, {args.steps} steps")
    variants = [("fp32 eager NCHW", "32-true", False, False), (f"kit default ({recipe} + channels_last)", recipe,
                                                                True, False)]
    if args.compile:
        variants.append((f"kit default + torch.compile", recipe, True, True))
    rates = {}
    for name, precision, cl, comp in variants:
        warmup = args.warmup + (10 if comp else 0)
        rates[name] = measure(precision, cl, comp, args.batch, args.steps, warmup)
        print(f"{name:45s} {rates[name]:8.1f} img/s")
    base = rates[variants[0][0]]
    for name in list(rates)[1:]:
        print(f"{name}: {rates[name] / base:.2f}× fp32 eager NCHW")
    return 0


if __name__ == "__main__":
    sys.exit(main())
