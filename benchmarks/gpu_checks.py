"""The kit's GPU checks in one run, a few minutes on a T4 or better: what a session lent a GPU runs (issue 20 item 7).

  1. the GPU, the driver and the torch build (nvidia-smi, torch.cuda.get_arch_list: can this torch drive it?)
  2. benchmarks/train_gpu.py: B4 at 384 px, fp32 eager against the kit's per-generation recipe
  3. benchmarks/augment.py: the augmentation benchmark with its GPU stage on the GPU
  4. `kitpkg plan` on the isic_b4_384 template over generated data at 384 and 512 px (random weights: no download)
  5. with 2+ GPUs: a two-fold run of the demo config, one fold per GPU (`run_cv`'s default there), wall time
Each step prints its output's tail and its wall time; nothing is written outside OUT. `--smoke` runs the same steps
on the CPU with tiny sizes (a check that the script works, not a figure):
    python benchmarks/gpu_checks.py [--out /tmp/kitpkg-gpu] [--steps 20] [--smoke]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

REPO = Path(__file__).resolve().parents[1]
TAIL_LINES = 25


def run(title: str, argv: Sequence[str], timeout: int, env: dict) -> bool:
    """Run one step, print its last lines and its wall time; True when it exited 0."""
    print(f"\n=== {title}\n$ {' '.join(map(str, argv))}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(list(map(str, argv)), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        text, code = f"{err.stdout or ''}{err.stderr or ''}", f"timeout after {timeout} s"
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    print("\n".join(lines[-TAIL_LINES:]))
    print(f"--- {title}: exit {code}, {time.perf_counter() - started:.0f} s", flush=True)
    return code == 0


def gpu_count() -> int:
    """GPUs the driver lists (0 without nvidia-smi)."""
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines()) if done.returncode == 0 else 0


def make_shards(out: Path, sizes: Sequence[int], patients: int) -> Path:
    """Generated ISIC-like demo data converted at `sizes` into OUT/shards (skipped when already there)."""
    from kitpkg.shards.convert import convert
    from kitpkg.shards.demo_data import make_demo_data

    shards = out / "shards"
    if all((shards / str(s) / "manifest.json").is_file() for s in sizes):
        return shards
    paths = make_demo_data(out / "source", n_patients=patients, images_per_patient=4, n_test=patients // 2,
                           width=768, height=512, seed=0, overwrite=True)
    convert(paths.images, paths.train_csv, shards, sizes=tuple(sizes), folds=5, test_csv=paths.test_csv,
            overwrite=True, progress=False)
    return shards


def main(argv: Sequence[str] = ()) -> int:
    """Run every step; exit 1 when one failed (the others still run)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/kitpkg-gpu", help="folder for the generated data and runs")
    p.add_argument("--steps", type=int, default=20, help="timed steps of train_gpu.py and kitpkg plan")
    p.add_argument("--smoke", action="store_true", help="the CPU, tiny sizes: checks the script, measures nothing")
    a = p.parse_args(list(argv) or None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "KITPKG_NO_PROGRESS": "1"}
    py, kit = sys.executable, [sys.executable, "-m", "kitpkg"]
    sizes = (64, 96) if a.smoke else (384, 512)
    steps = 2 if a.smoke else a.steps
    model = ["--set", "model.name=test_resnet"] if a.smoke else []
    device = "cpu" if a.smoke else "cuda"
    ok: List[bool] = []

    ok.append(run("GPU and torch build", [py, "-c", "import shutil, subprocess, torch; print(torch.__version__, "
                                                    "torch.version.cuda, torch.cuda.get_arch_list()); "
                                                    "shutil.which('nvidia-smi') and subprocess.run(['nvidia-smi'])"],
                  60, env))
    ok.append(run("train_gpu.py", [py, "benchmarks/train_gpu.py", "--device", device, "--steps", steps,
                                   *(["--size", 64, "--batch", 4, "--warmup", 1] if a.smoke else [])], 600, env))
    ok.append(run("augment.py (GPU stage)", [py, "benchmarks/augment.py", "--device", device, "--data",
                                             out / "aug", "--rounds", 1,
                                             *(["--n", 64, "--n-full", 16, "--size", 64, "--batch", 16]
                                               if a.smoke else ["--n", 1024, "--n-full", 128])], 900, env))
    print("\n=== generated shards", flush=True)
    shards = make_shards(out, sizes, 16 if a.smoke else 160)
    if not (out / "b4.yaml").exists():  # a re-run keeps it (init refuses to overwrite)
        ok.append(run("kitpkg init --from isic_b4_384", [*kit, "init", "b4", "--from", "isic_b4_384", "--dir", out],
                      120, env))
    plan = [*kit, "plan", "--config", out / "b4.yaml", "--run-dir", out / "runs" / "b4", "--steps", steps,
            "--sizes", ",".join(map(str, sizes)), "--set", f"data.shards={shards}", "--set", "model.pretrained=false",
            "--set", f"data.image_size={sizes[0]}", *model]
    ok.append(run(f"kitpkg plan isic_b4_384 at {' and '.join(map(str, sizes))} px", plan, 900, env))
    gpus = gpu_count()
    if gpus >= 2 or a.smoke:
        cv = [*kit, "cv", "--config", REPO / "kitpkg" / "configs" / "demo.yaml", "--run-dir", out / "runs" / "two",
              "--set", f"data.shards={shards}", "--set", f"data.image_size={sizes[0]}", "--set", "data.folds=[0,1]",
              "--set", "train.epochs=1", *model, *(["--parallel-folds", 2, "--set", "train.accelerator=cpu"]
                                                   if a.smoke else [])]
        ok.append(run("two folds, one per GPU", cv, 900, env))
    else:
        print(f"\n=== two folds, one per GPU: skipped ({gpus} GPU visible)")
    print(f"\n{sum(ok)} of {len(ok)} steps passed")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
