"""Benchmark: `kitpkg convert` vs a typical conversion script on the same generated photo-like JPEGs, in one run.

The typical script is what users write in a notebook: one process, PIL open → RGB → centre-crop resize
(ImageOps.fit, the same geometry as kitpkg's default `crop`) → JPEG bytes → `webdataset.ShardWriter`. kitpkg runs with
its defaults (all cores, stratified folds, WebDataset output, JPEG quality 90 for both). Prints images/s and the ratio.

    .venv/bin/python benchmarks/convert.py            # ≈ 1-3 min on 2 cores (sources are cached for reruns)
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from photos import write_photo_jpegs  # noqa: E402

MID = [(512, 384), (768, 512), (1024, 683)]  # "512–1024 px" sources
BIG = (4000, 2667)  # ISIC-like originals


def _make(task):
    out, n, w, h, seed = task
    return write_photo_jpegs(out, n, w, h, quality=90, seed=seed)


def make_sources(cache: str, n_mid: int, n_big: int):
    """Photo-like JPEG folders (cached under `cache`); generation runs on all cores."""
    tasks = [(os.path.join(cache, f"mid/{w}x{h}"), n_mid // len(MID), w, h, k) for k, (w, h) in enumerate(MID)]
    per = -(-n_big // 2)
    tasks += [(os.path.join(cache, f"big/part{k}"), min(per, n_big - k * per), *BIG, 10 + k) for k in range(2)]
    with multiprocessing.get_context("fork").Pool(min(len(tasks), os.cpu_count() or 1)) as pool:
        pool.map(_make, tasks)
    return os.path.join(cache, "mid"), os.path.join(cache, "big")


def write_csv(folder: str, path: str) -> int:
    """ISIC-like CSV (image_name, patient_id, target) for every JPEG under `folder`."""
    names = [f"{os.path.basename(r)}_{os.path.splitext(f)[0]}" for r, _, files in sorted(os.walk(folder))
             for f in sorted(files) if f.endswith(".jpg")]
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("image_name,patient_id,target\n")
        for i, name in enumerate(names):
            f.write(f"{name},IP_{i // 3},{int(rng.uniform() < 0.1)}\n")
    return len(names)


def flat_copy(folder: str, dest: str) -> None:
    """Hard-link images as <subfolder>_<name>.jpg so ids are unique across the size folders (no copying bytes)."""
    os.makedirs(dest, exist_ok=True)
    for root, _, files in os.walk(folder):
        for f in files:
            link = os.path.join(dest, f"{os.path.basename(root)}_{f}")
            if not os.path.exists(link):
                try:
                    os.link(os.path.join(root, f), link)
                except OSError:  # another file system: copy instead
                    shutil.copyfile(os.path.join(root, f), link)


def typical_script(images: str, csv: str, out: str, size: int) -> None:
    """What a notebook user writes: PIL, one process, webdataset.ShardWriter."""
    import pandas as pd
    import webdataset as wds
    from PIL import Image, ImageOps

    df = pd.read_csv(csv)
    os.makedirs(out, exist_ok=True)
    with wds.ShardWriter(os.path.join(out, "train-%05d.tar"), maxcount=1024, verbose=0) as sink:
        for row in df.itertuples():
            img = Image.open(os.path.join(images, f"{row.image_name}.jpg")).convert("RGB")
            img = ImageOps.fit(img, (size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            sink.write({"__key__": row.image_name, "jpg": buf.getvalue(), "cls": int(row.target),
                        "json": {"image_name": row.image_name, "patient_id": row.patient_id, "target": row.target}})


def kitpkg_convert(images: str, csv: str, out: str, size: int, workers) -> None:
    """kitpkg with its defaults (all cores), WebDataset output like the typical script."""
    from kitpkg.shards.convert import convert

    convert(images, csv, out, fmt="wds", sizes=(size,), workers=workers, progress=False, quality=90)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    """Run both converters on each source set and print images/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "kitpkg-bench-photos"),
                        help="folder for the generated sources (reused)")
    parser.add_argument("--n-mid", type=int, default=600, help="512–1024 px sources (split over 3 sizes)")
    parser.add_argument("--n-big", type=int, default=40, help="4000×2667 px sources")
    parser.add_argument("--size", type=int, default=384, help="output side in px")
    parser.add_argument("--workers", type=int, default=None, help="kitpkg workers (default: all cores)")
    args = parser.parse_args()
    os.environ["KITPKG_NO_PROGRESS"] = "1"
    t0 = time.perf_counter()
    mid, big = make_sources(args.cache, args.n_mid, args.n_big)
    print(f"sources ready in {time.perf_counter() - t0:.0f} s ({args.cache}); {os.cpu_count()} cores; "
          f"output {args.size}×{args.size} JPEG q90, WebDataset tars")
    work = tempfile.mkdtemp(prefix="kitpkg-bench-")
    try:
        for label, folder in (("512–1024 px", mid), (f"{BIG[0]}×{BIG[1]} px", big)):
            flat = os.path.join(work, os.path.basename(folder), "images")
            flat_copy(folder, flat)
            csv = os.path.join(work, os.path.basename(folder), "train.csv")
            n = write_csv(folder, csv)
            t_typ = timed(typical_script, flat, csv, os.path.join(work, "typ", label[:4]), args.size)
            t_kit = timed(kitpkg_convert, flat, csv, os.path.join(work, "kit", label[:4]), args.size, args.workers)
            print(f"{label:>14}: {n:4d} images | typical PIL + ShardWriter {n / t_typ:7.1f} img/s | "
                  f"kitpkg convert {n / t_kit:7.1f} img/s | ratio {t_typ / t_kit:4.1f}×")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
