"""Augmentation benchmark: a preset's CPU stage in kitpkg's loader vs the full 1st-place list on CPU.

Prints, in one run:
  (a) images/s of kitpkg's ShardLoader over 384 px TFRecord shards with the preset's CPU stage applied per sample
      (the training loader's own CPU stage, `TrainOptions.augment`, seeded per sample), `--workers` workers;
  (b) images/s of the SIIM-ISIC 2020 1st-place albumentations list, all on the CPU, in a plain map-style Dataset
      over the same images as JPEG files (cv2.imread, as the 1st place did) with DataLoader(num_workers=`--workers`);
  (c) the preset's GPU stage in ms per `--batch` × 3 × `--size`² batch on `--device` (the CPU by default);
and the ratio (a)/(b) against a >= 5x target. Every loader figure is the best of `--rounds` interleaved
rounds, counted after the first batch (worker start-up excluded alike). Images are generated (benchmarks/photos.py),
cached in --data.

    .venv/bin/python benchmarks/augment.py                 # CPU figures; add --device cuda on a GPU machine
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def first_place_list(size: int):
    """haqishen's SIIM-ISIC 2020 training augmentation (dataset.py) in albumentations 2.x names, all on the CPU."""
    import albumentations as A

    return A.Compose([
        A.Transpose(p=0.5), A.VerticalFlip(p=0.5), A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.75),
        A.OneOf([A.MotionBlur(blur_limit=5), A.MedianBlur(blur_limit=5), A.GaussianBlur(blur_limit=5),
                 A.GaussNoise(std_range=(0.0088, 0.0215))], p=0.7),  # var_limit (5, 30) in 0..255 units
        A.OneOf([A.OpticalDistortion(distort_limit=1.0), A.GridDistortion(num_steps=5, distort_limit=1.0),
                 A.ElasticTransform(alpha=3)], p=0.7),
        A.CLAHE(clip_limit=4.0, p=0.7),
        A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=0.5),
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-15, 15), border_mode=0, p=0.85),
        A.Resize(size, size),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.375, 0.375), hole_width_range=(0.375, 0.375),
                        p=0.7),
    ])


def _rate(loader, limit: int, count) -> float:
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for batch in it:
        seen += count(batch)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def run_kitpkg(data: str, a) -> float:
    from kitpkg.augment import build_cpu_stage, load_preset
    from kitpkg.data.dataset import ShardDataset, TrainOptions
    from kitpkg.data.loader import ShardLoader

    stage = build_cpu_stage(load_preset(a.preset).cpu)
    dataset = ShardDataset(os.path.join(data, "tfrec"), "train", None, batch_size=a.batch, image_size=a.size,
                           seed=0, train_options=TrainOptions(augment=stage))  # the training loader's own CPU stage
    return _rate(ShardLoader(dataset, num_workers=a.workers), a.n, lambda b: len(b["id"]))


def run_full_cpu(data: str, a) -> float:
    import glob

    import cv2
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __init__(self, paths, transform):
            self.paths, self.transform = paths, transform

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            img = cv2.cvtColor(cv2.imread(self.paths[i]), cv2.COLOR_BGR2RGB)
            return torch.from_numpy(self.transform(image=img)["image"]).permute(2, 0, 1), i % 2

    def worker_init(_):
        cv2.setNumThreads(0)  # one thread per worker, as kitpkg's workers: the workers are the parallelism
        torch.set_num_threads(1)

    files = Files(sorted(glob.glob(os.path.join(data, "jpg", "*.jpg"))), first_place_list(a.size))
    loader = DataLoader(files, batch_size=a.batch, shuffle=True, num_workers=a.workers, worker_init_fn=worker_init)
    return _rate(loader, a.n_full, lambda b: len(b[0]))


def run_gpu_stage(a) -> float:
    import torch

    from kitpkg.augment import build_gpu_stage, load_preset

    stage = build_gpu_stage(load_preset(a.preset).gpu)
    device = torch.device(a.device)
    images = torch.randint(0, 256, (a.batch, 3, a.size, a.size), dtype=torch.uint8, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(a.gpu_warmup + a.gpu_batches):
        sync()
        start = time.perf_counter()
        stage(images, torch.Generator().manual_seed(step))
        sync()
        times.append(time.perf_counter() - start)
    timed = sorted(times[a.gpu_warmup:])
    return 1000 * timed[len(timed) // 2]  # the median: robust to this shared machine's hiccups


def main() -> None:
    """Prepare the data, time the three stages, print the figures and ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/kitpkg-bench-aug", help="folder for the generated data (reused)")
    p.add_argument("--n", type=int, default=2048, help="images generated (and timed through kitpkg's loader)")
    p.add_argument("--n-full", type=int, default=640, help="images timed through the full CPU list (it is slow)")
    p.add_argument("--size", type=int, default=384, help="image side, stored and trained")
    p.add_argument("--batch", type=int, default=64, help="batch size (loaders and GPU stage)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--preset", default="isic", help="augmentation preset (kitpkg/augment/presets)")
    p.add_argument("--device", default="cpu", help="device of the GPU stage: cpu, cuda, cuda:1 …")
    p.add_argument("--gpu-batches", type=int, default=10, help="GPU stage batches timed (median)")
    p.add_argument("--gpu-warmup", type=int, default=2, help="GPU stage batches run before timing")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (a) and (b); each keeps its best")
    a = p.parse_args()
    from benchmarks.loader import prepare

    data = os.path.join(a.data, f"n{a.n}-{a.size}")
    prepare(data, a.n, a.size)
    best = {"a": 0.0, "b": 0.0}
    for r in range(a.rounds):
        best["a"] = max(best["a"], run_kitpkg(data, a))
        best["b"] = max(best["b"], run_full_cpu(data, a))
        print(f"round {r + 1}: (a) {best['a']:.1f} (b) {best['b']:.1f} img/s so far", flush=True)
    ms = run_gpu_stage(a)
    ratio = best["a"] / best["b"]
    print(f"best of {a.rounds} round(s), {a.size} px, {a.workers} workers, preset {a.preset} "
          "(a shared, noisy machine: figures drift by tens of percent):")
    print(f"(a) kitpkg loader + {a.preset} CPU stage: {best['a']:7.1f} img/s")
    print(f"(b) plain Dataset + full 1st-place list on CPU: {best['b']:7.1f} img/s")
    print(f"(c) {a.preset} GPU stage on {a.device}: {ms:.1f} ms per {a.batch}x{a.size}² batch "
          f"({a.batch / ms * 1000:.0f} img/s)")
    print(f"(a)/(b): {ratio:.2f}x (target >= 5x): {'met' if ratio >= 5 else 'NOT met'}")
    if a.device.startswith("cuda"):
        import torch

        print(f"GPU stage target < 10 ms per 64x384² on a T4-class GPU; this GPU: {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
