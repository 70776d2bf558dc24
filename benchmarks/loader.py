"""Loader benchmark: kitpkg vs PIL files, webdataset, the `tfrecord` package and tf.data on one generated dataset.

Same work per sample for every system: decode a 512 px q90 photo-like JPEG, resize to 384 bilinear, uint8 CHW tensor,
shuffled batches of 64, 2 workers (2 threads for tf.data). Every system runs in its own fresh process (the `tfrecord`
package cannot share a process with TensorFlow). Prints images/s, kitpkg's ratio to the best peer, kitpkg as a
fraction of the decode limit (single-core decode+resize rate x workers), and kitpkg's peak RSS per epoch (main +
workers) over 3 epochs. Every system runs `--rounds` times, interleaved, and keeps its best figure (the machine's
speed drifts). `kitpkg-wds` is kitpkg on the same bytes in tar shards (the comparison uses TFRecord).

    .venv/bin/python benchmarks/loader.py            # data cached in /tmp/kitpkg-bench (made on the first run)
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SYSTEMS = ("files-pil", "webdataset", "tfrecord-pkg", "tf.data", "kitpkg", "kitpkg-wds")
KITPKG = ("kitpkg", "kitpkg-wds")  # kitpkg on the TFRecord shards (the figure compared) and on the same bytes as tars


def prepare(data: str, n: int, size: int) -> None:
    """JPEG files + the same bytes in TFRecord shards and webdataset tars, both indexed by kitpkg; reused if present."""
    from benchmarks.photos import write_photo_jpegs
    from kitpkg.shards.example import encode_example
    from kitpkg.shards.index import index
    from kitpkg.shards.manifest import MANIFEST_NAME
    from kitpkg.shards.tfrecord import TFRecordWriter
    from kitpkg.shards.wds import TarShardWriter

    if os.path.exists(os.path.join(data, "tfrec", MANIFEST_NAME)):
        if not os.path.exists(os.path.join(data, "wds", MANIFEST_NAME)):  # data made before kitpkg-wds existed
            index([os.path.join(data, "wds")])
        return
    paths = write_photo_jpegs(os.path.join(data, "jpg"), n, size, size, quality=90, seed=0)
    with open(os.path.join(data, "labels.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("path", "target")] + [(p, i % 2) for i, p in enumerate(paths)])
    for sub in ("tfrec", "wds"):
        os.makedirs(os.path.join(data, sub), exist_ok=True)
    per = 256
    for k in range(0, n, per):
        chunk = paths[k:k + per]
        with open(os.path.join(data, "tfrec", f"train{k // per:02d}-{len(chunk)}.tfrec"), "wb") as tf_f, \
                open(os.path.join(data, "wds", f"train-{k // per:04d}.tar"), "wb") as tar_f:
            tfw, tarw = TFRecordWriter(tf_f), TarShardWriter(tar_f)
            for j, p in enumerate(chunk):
                img, name, label = open(p, "rb").read(), os.path.basename(p)[:-4], (k + j) % 2
                tfw.write(encode_example({"image": img, "image_name": name, "target": label}))
                tarw.write(name, {"jpg": img, "cls": str(label).encode()})
            tarw.close()
    index([os.path.join(data, "tfrec")], label_col="target")
    index([os.path.join(data, "wds")])


def _rss_tree() -> int:
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def _time(batches, n_limit: int, count) -> dict:
    """Images/s after the first batch (worker start-up excluded for every system alike), and peak RSS."""
    it = iter(batches)
    seen = count(next(it))
    start, rss = time.perf_counter(), _rss_tree()
    timed = 0
    for b in it:
        timed += count(b)
        rss = max(rss, _rss_tree()) if timed % 640 < 64 else rss
        if seen + timed >= n_limit:
            break
    return {"rate": timed / (time.perf_counter() - start), "images": seen + timed, "peak_rss": rss}


def run_files(data, a):
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            img = Image.open(self.paths[i]).convert("RGB").resize((a.out, a.out), Image.BILINEAR)
            return torch.from_numpy(np.asarray(img)).permute(2, 0, 1), i % 2

    loader = DataLoader(Files(sorted(glob.glob(os.path.join(data, "jpg", "*.jpg")))), batch_size=a.batch,
                        shuffle=True, num_workers=a.workers)
    return _time(loader, a.n, lambda b: len(b[0]))


def run_webdataset(data, a):
    import numpy as np
    import torch
    import webdataset as wds
    from PIL import Image
    from torch.utils.data import DataLoader

    def to_tensor(img):
        return torch.from_numpy(np.asarray(img.resize((a.out, a.out), Image.BILINEAR))).permute(2, 0, 1)

    tars = sorted(glob.glob(os.path.join(data, "wds", "*.tar")))
    pipe = (wds.WebDataset(tars, shardshuffle=len(tars)).shuffle(1000).decode("pil").to_tuple("jpg", "cls")
            .map_tuple(to_tensor, lambda c: c).batched(a.batch))
    return _time(DataLoader(pipe, batch_size=None, num_workers=a.workers), a.n, lambda b: len(b[0]))


def run_tfrecord_pkg(data, a):
    import io

    import numpy as np
    import torch
    from PIL import Image
    from tfrecord.torch.dataset import MultiTFRecordDataset
    from torch.utils.data import DataLoader

    def transform(rec):
        img = Image.open(io.BytesIO(rec["image"])).convert("RGB").resize((a.out, a.out), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img)).permute(2, 0, 1), int(rec["target"][0])

    names = [os.path.basename(p)[:-6] for p in sorted(glob.glob(os.path.join(data, "tfrec", "*.tfrec")))]
    ds = MultiTFRecordDataset(os.path.join(data, "tfrec", "{}.tfrec"), None, {n: 1.0 for n in names},
                              {"image": "byte", "target": "int"}, shuffle_queue_size=1000, transform=transform,
                              infinite=False)
    return _time(DataLoader(ds, batch_size=a.batch, num_workers=a.workers), a.n, lambda b: len(b[0]))


def run_tfdata(data, a):
    import tensorflow as tf
    import torch

    tf.config.threading.set_inter_op_parallelism_threads(a.workers)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "target": tf.io.FixedLenFeature([], tf.int64)}

    def parse(rec):
        ex = tf.io.parse_single_example(rec, spec)
        img = tf.image.resize(tf.io.decode_jpeg(ex["image"], channels=3), (a.out, a.out), method="bilinear")
        return tf.transpose(tf.cast(tf.round(img), tf.uint8), (2, 0, 1)), ex["target"]

    files = sorted(glob.glob(os.path.join(data, "tfrec", "*.tfrec")))
    ds = (tf.data.TFRecordDataset(files).shuffle(1000).map(parse, num_parallel_calls=a.workers).batch(a.batch)
          .prefetch(2))
    options = tf.data.Options()
    options.threading.private_threadpool_size = a.workers
    ds = ds.with_options(options)
    return _time(((torch.from_numpy(x), torch.from_numpy(y)) for x, y in ds.as_numpy_iterator()), a.n,
                 lambda b: len(b[0]))


def run_kitpkg(data, a, fmt="tfrec"):
    from kitpkg.data.dataset import ShardDataset
    from kitpkg.data.loader import ShardLoader

    loader = ShardLoader(ShardDataset(os.path.join(data, fmt), "train", None, batch_size=a.batch,
                                      image_size=a.out, seed=0), num_workers=a.workers, persistent_workers=True)
    blobs = _blobs(data, 200)
    epochs = []
    for _ in range(a.epochs):
        epochs.append(_time(loader, 10**9, lambda b: len(b["id"])))
        # the machine's own speed right after the epoch (persistent workers idle): a falling loader rate with a
        # steady ratio to it is the machine drifting, a falling ratio is the loader slowing down
        epochs[-1]["machine"] = _decode_pass(blobs, a.out)
    return {"rate": epochs[0]["rate"], "images": epochs[0]["images"], "epochs": epochs,
            "peak_rss": [e["peak_rss"] for e in epochs]}


def _blobs(data, n):
    return [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(data, "jpg", "*.jpg")))[:n]]


def _decode_pass(blobs, out) -> float:
    """Single-core decode + bilinear resize rate (images/s) over `blobs`: the work every system does per sample."""
    import cv2
    import simplejpeg

    cv2.setNumThreads(0)
    start = time.perf_counter()
    for blob in blobs:
        cv2.resize(simplejpeg.decode_jpeg(blob, "RGB"), (out, out), interpolation=cv2.INTER_LINEAR)
    return len(blobs) / (time.perf_counter() - start)


def run_decode_limit(data, a):
    blobs = _blobs(data, 400)
    # best of 3: a limit, not a typical pass (this machine's speed drifts between seconds)
    return {"rate": max(_decode_pass(blobs, a.out) for _ in range(3))}


RUNNERS = {"files-pil": run_files, "webdataset": run_webdataset, "tfrecord-pkg": run_tfrecord_pkg,
           "tf.data": run_tfdata, "kitpkg": run_kitpkg, "kitpkg-wds": lambda data, a: run_kitpkg(data, a, "wds"),
           "decode-limit": run_decode_limit}


def main() -> None:
    """Prepare the data, run every system in its own process, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/kitpkg-bench", help="folder for the generated data (reused)")
    p.add_argument("--n", type=int, default=3000, help="images (>= 3000 for the README's figures)")
    p.add_argument("--size", type=int, default=512, help="stored JPEG side")
    p.add_argument("--out", type=int, default=384, help="resize target side")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers / tf.data threads")
    p.add_argument("--epochs", type=int, default=3, help="kitpkg epochs (RSS growth is measured over them)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--rounds", type=int, default=2,
                   help="run every system this many times, interleaved, and keep each one's best (this machine's "
                        "speed drifts by tens of percent over minutes; every system gets the same treatment)")
    p.add_argument("--run", choices=sorted(RUNNERS), help=argparse.SUPPRESS)  # internal: one system, JSON out
    a = p.parse_args()
    data = os.path.join(a.data, f"n{a.n}-{a.size}")
    if a.run:
        print(json.dumps(RUNNERS[a.run](data, a)))
        return
    prepare(data, a.n, a.size)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    runs: dict = {}
    for r in range(a.rounds):
        for system in ["decode-limit"] + a.systems.split(","):
            cmd = [sys.executable, __file__, "--run", system] + [x for x in sys.argv[1:] if not x.startswith("--run")]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"{system}: failed\n{out.stderr[-2000:]}")
                continue
            runs.setdefault(system, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {system:>13}: {runs[system][-1]['rate']:7.1f} img/s", flush=True)
    results = {system: max(rs, key=lambda x: x["rate"]) for system, rs in runs.items()}
    print(f"best of {a.rounds} round(s):")
    for system, res in results.items():
        print(f"{system:>13}: {res['rate']:7.1f} img/s")
    limit = results["decode-limit"]["rate"] * a.workers
    peers = {k: v["rate"] for k, v in results.items() if k not in KITPKG + ("decode-limit",)}
    if "kitpkg" in results:
        kit = results["kitpkg"]
        best = max(peers, key=peers.get) if peers else None
        print(f"decode limit: {results['decode-limit']['rate']:.0f}/s per core x {a.workers} = {limit:.0f} img/s")
        if best:
            print(f"kitpkg / best peer ({best}): {kit['rate'] / peers[best]:.2f}x")
        print(f"kitpkg / decode limit: {kit['rate'] / limit:.0%}")
        if "kitpkg-wds" in results:
            print(f"kitpkg on tars / decode limit: {results['kitpkg-wds']['rate'] / limit:.0%}")
        rates = ", ".join(f"{e['rate']:.0f}" for e in kit["epochs"])
        rss = [r / 2**20 for r in kit["peak_rss"]]
        print(f"kitpkg per epoch: {rates} img/s; peak RSS (main + workers) MiB: "
              f"{', '.join(f'{r:.0f}' for r in rss)}; growth epoch 1 -> {len(rss)}: {rss[-1] / rss[0] - 1:+.1%}")
        machine = ", ".join(f"{e['machine']:.0f}" for e in kit["epochs"])
        ratio = ", ".join(f"{e['rate'] / e['machine']:.2f}" for e in kit["epochs"])
        print(f"machine's single-core decode rate after each epoch: {machine}/s; kitpkg per epoch / it: {ratio} "
              f"(steady ratio = the machine drifts, falling ratio = the loader slows)")


if __name__ == "__main__":
    main()
