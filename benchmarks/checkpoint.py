"""Benchmark: how long a full-state checkpoint blocks the training thread, synchronous vs asynchronous copy, in one run.

kitpkg's RunCheckpoints saves each checkpoint locally (trainer.save_checkpoint) and publishes it into the run directory
(kitpkg.fsutil.atomic_copy: temp name, size check, fsync, rename), which on Colab sits on Google Drive. Measured here:
  (a) the local torch.save of a B4-sized full state: tf_efficientnet_b4 (timm, pretrained=False: no download) weights
      + AdamW's two moments + the EMA copy (`kitpkg_ema`), as the isic_b4_384 template's checkpoints hold;
  (b) the copy to slow storage: the kit's own atomic_copy, throttled by a sleep of (size / --drive-mbps) before it;
  (c) the training time it is compared with: a T4 step of B4 @ 384, batch 32 is a parameter (--step-s; the default
      is an estimate, see below); and a real tiny training run through the kit on this CPU (the demo template's model
      and checkpoint interval, generated data, fold 0), once with every checkpoint published before training goes on
      (the synchronous behaviour) and once as RunCheckpoints does it.
"Blocked" is the time RunCheckpoints._save keeps the training thread; synchronous = that plus waiting for the copy.

Assumptions, both parameters:
  --drive-mbps 20: Colab's Drive FUSE mount writes through a local cache that uploads behind it; large files are
    reported anywhere from tens of MB/s down to KB/s on a bad day (googlecolab/colabtools #5952). 20 MB/s is a
    sustained rate to plan for, not a measurement. Kaggle's /kaggle/working is a local disk: --drive-mbps 0 (none).
  --step-s 0.55: timm's benchmark table gives tf_efficientnet_b4 at 380 px, AMP, channels_last, 242 train img/s on an
    RTX 3090 (results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv). EfficientNets are memory-bound; a T4 has a
    third of the 3090's memory bandwidth (320 vs 936 GB/s) and throttles at 70 W: ~1/4 of it, ~58 img/s, 0.55 s per
    step of 32. `benchmarks/train_gpu.py` measures the real figure on a GPU; give it here.
The share per template counts one fold: train.epochs epochs of --epoch-steps steps (870: ISIC 2020's 33,126 images,
4/5 per fold, positives seen 4x, batch 32), each with its step checkpoints, the end-of-epoch one and best.ckpt (worst
case: the score improves every epoch); asynchronously also the wait at the fit's end for the last two copies. The
tiny run prints its share without and with that wait (a large part of a one-minute fit, of a 2-hour fold not).
Goal: <= 2 % of training time blocked.

    nice -n 10 .venv/bin/python benchmarks/checkpoint.py                  # ~6 minutes on 2 shared cores
    nice -n 10 .venv/bin/python benchmarks/checkpoint.py --drive-mbps 5 --step-s 0.3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "kitpkg" / "configs"
GOAL = 0.02


class StateTrainer:
    """What RunCheckpoints asks of a trainer when it writes: save_checkpoint(path) of a fixed full state, rank 0."""

    is_global_zero = True

    def __init__(self, state: Dict[str, Any]):
        self.state = state

    def save_checkpoint(self, path: Any, weights_only: bool = False) -> None:
        """torch.save the state, as Lightning's save does after gathering it."""
        import torch

        torch.save(self.state, path)


def b4_state(model_name: str) -> Tuple[Dict[str, Any], int]:
    """(a full training state of `model_name`: weights, AdamW moments, EMA copy; its parameter count)."""
    import timm
    import torch

    model = timm.create_model(model_name, pretrained=False, num_classes=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # AdamW's exp_avg / exp_avg_sq now exist, as after any step
    weights = model.state_dict()
    state = {"epoch": 3, "global_step": 2600, "state_dict": weights, "optimizer_states": [optimizer.state_dict()],
             "kitpkg_ema": {k: v.clone() for k, v in weights.items() if v.is_floating_point()},
             "callbacks": {"RunCheckpoints": {"best": 0.9, "best_epoch": 2, "history": []}}}
    return state, sum(p.numel() for p in model.parameters())


def throttled(mbps: float) -> Callable[[Any, Any], None]:
    """kitpkg's atomic_copy preceded by the time `mbps` MB/s would take for the file (0: no throttle)."""
    from kitpkg.fsutil import atomic_copy

    def copy(src: Any, dest: Any) -> None:
        if mbps > 0:
            time.sleep(os.path.getsize(src) / (mbps * 1e6))
        atomic_copy(src, dest)

    return copy


def flush(writer: Any) -> None:
    """Wait for the writer's pending publishes (a synchronous writer has none)."""
    if hasattr(writer, "flush"):
        writer.flush()


def time_saves(writer: Any, trainer: Any, rounds: int, synchronous: bool) -> Tuple[List[float], List[float]]:
    """(seconds the training thread was blocked per checkpoint, seconds until each was published)."""
    from kitpkg.rundir import ckpt_name

    blocked, published = [], []
    for r in range(rounds):
        start = time.perf_counter()
        writer._save(trainer, ckpt_name(100 * (r + 1), after_validation=False))
        if synchronous:
            flush(writer)
        blocked.append(time.perf_counter() - start)
        flush(writer)  # the next checkpoint comes minutes later: its copy is done by then (checked below)
        published.append(time.perf_counter() - start)
    return blocked, published


def measure_b4(opts: argparse.Namespace, work: Path) -> Dict[str, float]:
    """Sizes and seconds of the B4-sized checkpoint: local save, copy, blocked sync/async."""
    import torch

    from kitpkg.train import checkpoint as C

    state, params = b4_state(opts.model)
    work.mkdir(parents=True, exist_ok=True)
    local = work / "local.ckpt"
    saves = []
    for _ in range(opts.rounds):
        start = time.perf_counter()
        torch.save(state, local)
        saves.append(time.perf_counter() - start)
    size = os.path.getsize(local)
    copy = throttled(opts.drive_mbps)
    copies = []
    for r in range(opts.rounds):
        start = time.perf_counter()
        copy(local, work / "drive" / f"copy{r}.ckpt")
        copies.append(time.perf_counter() - start)
    original = C.atomic_copy
    C.atomic_copy = copy
    try:
        trainer = StateTrainer(state)
        writer = C.RunCheckpoints(work / "sync", 1, 2, "val_auc")
        sync_blocked, _ = time_saves(writer, trainer, opts.rounds, True)
        writer.on_fit_end(trainer, None)
        writer = C.RunCheckpoints(work / "async", 1, 2, "val_auc")
        async_blocked, published = time_saves(writer, trainer, opts.rounds, False)
        writer.on_fit_end(trainer, None)
    finally:
        C.atomic_copy = original
    return {"params": params, "bytes": size, "save": statistics.median(saves), "copy": statistics.median(copies),
            "sync": statistics.median(sync_blocked), "async": statistics.median(async_blocked),
            "published": statistics.median(published), "is_async": hasattr(writer, "flush")}


def templates() -> List[Tuple[str, str, int, int, int]]:
    """(template, model, checkpoint_every_n_steps, batch size, epochs) of each config template."""
    import yaml

    rows = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        train, dataset = data.get("train", {}), data.get("data", {})
        rows.append((path.stem, data["model"]["name"], int(train.get("checkpoint_every_n_steps", 50)),
                     int(dataset.get("batch_size", 32)), int(train.get("epochs", 10))))
    return rows


def fold_share(blocked: float, copy: float, every: int, epochs: int, epoch_steps: int, step_s: float,
               asynchronous: bool) -> float:
    """Share of a fold's training time the training thread is blocked by its checkpoints (module docstring)."""
    saves = epoch_steps // every + 2  # step checkpoints (the one at the epoch's end gives way), epoch end, best
    interval = every * step_s
    end_wait = 0.0
    if asynchronous:  # a copy slower than the checkpoint interval makes the next save wait for the backlog
        blocked += max(0.0, copy - interval)
        end_wait = 2 * copy  # the fit's end waits for the last epoch's best.ckpt and end-of-epoch copies
    lost = epochs * saves * blocked + end_wait
    return lost / (epochs * epoch_steps * step_s + lost)


def tiny_run(opts: argparse.Namespace, work: Path) -> Dict[str, Dict[str, float]]:
    """Fold 0 of the demo template on generated data, trained through the kit on this CPU: once to warm up (the
    first fit of a process is slower), then with synchronous publishing (each checkpoint copied before training goes
    on) and with RunCheckpoints' own."""
    from kitpkg.config import override
    from kitpkg.demo import demo_config, demo_shards
    from kitpkg.train import checkpoint as C
    from kitpkg.train import cv

    demo_shards(work / "source", work / "shards", opts.kit_size, progress=False, n_patients=opts.kit_patients,
                n_test=8, width=96, height=64)
    results = {}
    for mode in ("warm-up", "synchronous", "asynchronous"):
        epochs = 1 if mode == "warm-up" else opts.kit_epochs
        config = demo_config(work, [override("train.epochs", epochs), override("data.num_workers", 0),
                                    override("data.image_size", opts.kit_size),
                                    override("train.checkpoint_every_n_steps", opts.kit_every),
                                    override("output.run_dir", str(work / mode))])
        blocked: List[float] = []
        fit_s: List[float] = []
        end_wait: List[float] = []
        save, fit, end, original = C.RunCheckpoints._save, cv.fit, C.RunCheckpoints.on_fit_end, C.atomic_copy

        def timed_save(self: Any, trainer: Any, name: str, prune: bool = True, _mode: str = mode) -> None:
            start = time.perf_counter()
            save(self, trainer, name, prune)
            if _mode == "synchronous":
                flush(self)
            blocked.append(time.perf_counter() - start)

        def timed_end(self: Any, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            end(self, trainer, pl_module)
            end_wait.append(time.perf_counter() - start)

        def timed_fit(*args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            fit(*args, **kwargs)
            fit_s.append(time.perf_counter() - start)

        if mode == "warm-up":
            cv.run_cv(config, folds=[0], train_only=True)
            continue
        C.RunCheckpoints._save, cv.fit, C.atomic_copy = timed_save, timed_fit, throttled(opts.kit_mbps)
        C.RunCheckpoints.on_fit_end = timed_end
        try:
            cv.run_cv(config, folds=[0], train_only=True)
        finally:
            C.RunCheckpoints._save, cv.fit, C.atomic_copy = save, fit, original
            C.RunCheckpoints.on_fit_end = end
        ckpts = sorted((work / mode / "fold0" / "ckpt").glob("*.ckpt"))
        results[mode] = {"n": len(blocked), "blocked": statistics.mean(blocked), "fit": fit_s[0],
                         "share": sum(blocked) / fit_s[0], "end": sum(end_wait),
                         "mb": max(p.stat().st_size for p in ckpts) / 1e6, "model": config.model.name,
                         "batch": config.data.batch_size}
    return results


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tf_efficientnet_b4", help="timm model whose full state is checkpointed")
    p.add_argument("--rounds", type=int, default=3, help="checkpoints timed per variant (the median is printed)")
    p.add_argument("--drive-mbps", type=float, default=20.0, help="assumed write rate of the slow storage, MB/s")
    p.add_argument("--step-s", type=float, default=0.55, help="seconds per training step of the B4 templates")
    p.add_argument("--epoch-steps", type=int, default=870, help="training steps per epoch of the B4 templates")
    p.add_argument("--kit-patients", type=int, default=240, help="tiny run: demo patients (4 images each)")
    p.add_argument("--kit-size", type=int, default=64, help="tiny run: image size in px")
    p.add_argument("--kit-epochs", type=int, default=2, help="tiny run: epochs of fold 0")
    p.add_argument("--kit-every", type=int, default=20, help="tiny run: checkpoint every N steps (demo: 20)")
    p.add_argument("--kit-mbps", type=float, default=20.0, help="tiny run: write rate of the slow storage, MB/s")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Measure, then print the figures before (synchronous) and after (asynchronous)."""
    opts = parse_args(argv)
    work = Path(opts.work or tempfile.mkdtemp(prefix="kitpkg-ckpt-bench-"))
    b4 = measure_b4(opts, work / "b4")
    mb = b4["bytes"] / 1e6
    rate = f"{opts.drive_mbps:g} MB/s (assumed Drive)" if opts.drive_mbps > 0 else "full speed (no throttle)"
    print(f"{opts.model} full state: {b4['params'] / 1e6:.1f} M params, checkpoint {mb:.0f} MB "
          f"(weights + AdamW moments + EMA)")
    print(f"(a) local torch.save: {b4['save']:.2f} s")
    print(f"(b) copy to slow storage at {rate}: {b4['copy']:.2f} s")
    after = (f"{b4['async']:.2f} s (published {b4['published']:.2f} s after the save began, in the background)"
             if b4["is_async"] else "n/a (this RunCheckpoints publishes synchronously)")
    print(f"training thread blocked per checkpoint: synchronous {b4['sync']:.2f} s | asynchronous {after}")
    for name, model, every, batch, epochs in templates():
        if "efficientnet_b4" not in model:
            continue
        sync = fold_share(b4["sync"], b4["copy"], every, epochs, opts.epoch_steps, opts.step_s, False)
        line = (f"{name}: every {every} steps x {opts.step_s:g} s/step (batch {batch}, T4 estimate) = "
                f"{every * opts.step_s:.0f} s between checkpoints, {epochs} epochs; share of training time blocked: "
                f"synchronous {100 * sync:.1f} %")
        if b4["is_async"]:
            share = fold_share(b4["async"], b4["copy"], every, epochs, opts.epoch_steps, opts.step_s, True)
            line += (f" | asynchronous {100 * share:.1f} % (goal <= {100 * GOAL:.0f} %: "
                     f"{'met' if share <= GOAL else 'NOT met'})")
        print(line)
    tiny = tiny_run(opts, work / "kit")
    sync, asyn = tiny["synchronous"], tiny["asynchronous"]
    kit_rate = f"at {opts.kit_mbps:g} MB/s" if opts.kit_mbps > 0 else "at full speed"
    print(f"(c) tiny CPU run through the kit (demo template: {sync['model']}, batch {sync['batch']}, every "
          f"{opts.kit_every} steps, {opts.kit_epochs} epochs, {sync['mb']:.0f} MB checkpoints copied {kit_rate}): "
          f"{sync['n']} checkpoints; blocked per checkpoint: synchronous {sync['blocked']:.2f} s | asynchronous "
          f"{asyn['blocked']:.2f} s; share of fit time: synchronous {100 * sync['share']:.1f} % | asynchronous "
          f"{100 * asyn['share']:.1f} % ({100 * (asyn['share'] + asyn['end'] / asyn['fit']):.1f} % with the "
          f"{asyn['end']:.1f} s the fit's end waited for its last copies); fit: {sync['fit']:.1f} s | "
          f"{asyn['fit']:.1f} s")


if __name__ == "__main__":
    main()
