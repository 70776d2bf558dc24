"""`kitpkg plan`'s measurements: a few real training steps of one fold (timed), and the largest batch that fits.

`measure` trains with the kit's own pieces (cv.make_datamodule/make_module, recipe.build_recipe,
trainer.build_trainer, timing.Throughput) in a temporary folder; `search_batch` runs in a fresh process (plan.py
calls it through child.call_in_child) and answers out-of-memory by a smaller batch (projection.largest_fitting).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytorch_lightning as pl

from ..config import Config
from ..errors import KitError
from .projection import Measured, largest_fitting

DEFAULT_STEPS = 30  # training batches timed, after the warm-up
WARMUP_STEPS = 5  # batches not timed: cuDNN autotuning, allocator growth, worker start-up
EVAL_BATCHES = 8  # validation batches per pass (one untimed warm-up pass, one timed)
SEARCH_LIMIT = 1024  # the batch-size search stops here


# -- measuring ---------------------------------------------------------------------------------------------------------
def uses_gpu(config: Config) -> bool:
    """Whether the config trains on a GPU here (read without a CUDA context: gpus.training_gpus)."""
    from .gpus import training_gpus

    return config.train.accelerator in ("auto", "gpu", "cuda") and bool(training_gpus(str(config.train.strategy)))


def one_device(config: Config) -> Config:
    """`config` on one device (the plan measures one; projection.py scales to train.devices)."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, devices="auto", strategy="auto"))


class _Window(pl.Callback):
    """Zeroes Throughput's figures after `warmup` batches, writes one checkpoint (timed) and stops after `steps`
    more. Put it after Throughput; its `sync` half (before Throughput) waits for the GPU at both ends."""

    def __init__(self, throughput: Any, warmup: int, steps: int, folder: Path, on_gpu: bool):
        self.throughput, self.warmup, self.steps, self.folder = throughput, warmup, steps, folder
        self.seen, self.ckpt_bytes, self.ckpt_s = 0, 0, 0.0
        self.sync = _Sync(self, on_gpu)
        self.called, self.first_batch = 0.0, 0.0  # trainer.fit's call (set by measure), the first batch's start

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.first_batch = self.first_batch or time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            self.throughput.images, self.throughput.train_s, self.throughput.wait_s = 0, 0.0, 0.0
        if self.seen >= self.warmup + self.steps:
            path = self.folder / "plan.ckpt"
            start = time.perf_counter()
            trainer.save_checkpoint(path, weights_only=False)  # what RunCheckpoints writes: the full state
            self.ckpt_s = time.perf_counter() - start
            self.ckpt_bytes = path.stat().st_size
            path.unlink()
            trainer.should_stop = True


class _Sync(pl.Callback):
    """_Window's first half: the GPU's queued work finishes before Throughput reads the clock at the window's ends."""

    def __init__(self, window: _Window, on_gpu: bool):
        self.window, self.on_gpu = window, on_gpu

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.on_gpu and self.window.seen + 1 in (self.window.warmup, self.window.warmup + self.window.steps):
            import torch

            torch.cuda.synchronize()


class _EvalClock(pl.Callback):
    """Validation images per second over a pass, from its first batch's start to its last batch's end (loading
    included); each pass starts the count afresh, so a first pass warms every batch shape up untimed."""

    def __init__(self, on_gpu: bool):
        self.on_gpu, self.start, self.end, self.images = on_gpu, 0.0, 0.0, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        self.start, self.end, self.images = 0.0, 0.0, 0

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.start = self.start or time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.on_gpu:
            import torch

            torch.cuda.synchronize()
        self.end = time.perf_counter()
        self.images += len(batch["id"])

    def rate(self) -> float:
        """Images per second of the last pass."""
        if not self.images or self.end <= self.start:
            raise KitError("kitpkg plan: no validation batch ran; check data.folds and the shards' folds")
        return self.images / (self.end - self.start)


def measure(config: Config, inputs: Any, fold: int, steps: int = DEFAULT_STEPS, warmup: int = WARMUP_STEPS
            ) -> Measured:
    """Train fold `fold` for `warmup` + `steps` batches (Lightning in a temporary folder), validate a few batches,
    time the loader alone and one checkpoint: the rates projection.py needs."""
    import tempfile

    import torch

    from .cv import make_datamodule, make_module
    from .recipe import build_recipe, recipe_callbacks
    from .timing import Throughput, device_fields, loader_rate
    from .trainer import build_trainer

    config, on_gpu = one_device(config), uses_gpu(config)
    pl.seed_everything(config.train.seed + fold, workers=True, verbose=False)
    recipe = build_recipe(config, inputs, fold)
    dm = make_datamodule(recipe, inputs)
    module = make_module(recipe, load_pretrained=False, meta=dm.fitted_meta())  # timing needs no trained weights
    throughput = Throughput()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="kitpkg-plan-") as tmp:
        window = _Window(throughput, warmup, steps, Path(tmp), on_gpu)
        trainer = build_trainer(recipe, callbacks=[throughput.arrival, window.sync, *recipe_callbacks(recipe),
                                                   throughput, window],
                                default_root_dir=tmp, max_epochs=-1, max_steps=warmup + steps, limit_val_batches=0,
                                enable_progress_bar=False)  # timed: no bar redrawn between steps
        window.called = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        peak = torch.cuda.max_memory_allocated() if on_gpu else _peak_rss()
        clock = _EvalClock(on_gpu)
        evaluator = build_trainer(recipe, callbacks=[clock], default_root_dir=tmp, limit_val_batches=EVAL_BATCHES,
                                  enable_progress_bar=False)
        # the first pass warms up (cuDNN/oneDNN per batch shape, the metric), the second is timed
        for _ in range(2):
            evaluator.validate(module, datamodule=dm, verbose=False)
    figures = throughput.figures()
    if window.seen < warmup + steps or not figures:
        raise KitError(f"kitpkg plan: training stopped after {window.seen} batches, before {warmup} + {steps}")
    where = device_fields(recipe.device)
    return Measured(image_size=config.data.image_size, batch_size=config.data.batch_size, steps=steps,
                    train_img_s=figures["train_img_s"], loader_wait=figures["loader_wait"],
                    loader_img_s=loader_rate(dm.train_dataloader()), eval_img_s=round(clock.rate(), 2),
                    peak_bytes=int(peak), peak_of="GPU" if on_gpu else "CPU process RSS", device=where["device"],
                    precision=where["precision"], ckpt_bytes=window.ckpt_bytes, ckpt_s=round(window.ckpt_s, 3),
                    device_bytes=torch.cuda.get_device_properties(0).total_memory if on_gpu else None,
                    startup_s=round(window.first_batch - window.called, 3))


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (ru_maxrss: kB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# -- the batch-size search (run in a child process) --------------------------------------------------------------------
def search_batch(config: Config, fold: int, limit: int = SEARCH_LIMIT) -> Tuple[Optional[int], bool]:
    """largest_fitting over training steps at each batch size (one real batch of fold `fold` tiled to the size);
    meant for a fresh process (plan_size runs it through child.call_in_child)."""
    import gc

    import torch

    from .cv import make_datamodule
    from .inputs import load_inputs
    from .recipe import build_recipe

    config = one_device(config)
    inputs = load_inputs(config)
    recipe = build_recipe(config, inputs, fold)
    dm = make_datamodule(recipe, inputs)
    sample = next(iter(dm.train_dataloader()))

    def fits(batch_size: int) -> bool:
        try:
            train_steps(recipe, dm.fitted_meta(), tiled(sample, batch_size))
            return True
        except Exception as err:  # noqa: BLE001 - only out-of-memory answers "does not fit"; the rest is raised
            if not is_oom(err):
                raise
            return False
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    return largest_fitting(fits, config.data.batch_size, limit)


def train_steps(recipe: Any, meta: Any, batch: Dict[str, Any], steps: int = 2) -> None:
    """`steps` optimizer steps of a fresh module on `batch` (the recipe's callbacks: EMA, mixing, GPU stage)."""
    import tempfile
    import warnings

    from .cv import make_module
    from .recipe import recipe_callbacks
    from .trainer import build_trainer

    module = make_module(recipe, load_pretrained=False, meta=meta)
    batches = _Repeat(batch, steps * recipe.config.train.accumulate)
    with tempfile.TemporaryDirectory(prefix="kitpkg-plan-search-") as tmp:
        trainer = build_trainer(recipe, recipe_callbacks(recipe), default_root_dir=tmp, max_epochs=1,
                                limit_val_batches=0, enable_progress_bar=False)
        with warnings.catch_warnings():  # the probe trains on one batch, validates nothing: no news
            warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
            trainer.fit(module, train_dataloaders=batches)


class _Repeat:
    """One batch `times` times, as one iterable (a plain list would be taken for a list of loaders)."""

    def __init__(self, batch: Dict[str, Any], times: int):
        self.batch, self.times = batch, times

    def __iter__(self):
        return iter([self.batch] * self.times)

    def __len__(self) -> int:
        return self.times


def tiled(batch: Dict[str, Any], size: int) -> Dict[str, Any]:
    """`batch` repeated to `size` samples (tensors along their first dimension, lists item by item)."""
    import torch

    n = len(batch["id"])
    index = torch.arange(size) % n
    return {key: value[index] if isinstance(value, torch.Tensor) else [value[i % n] for i in range(size)]
            for key, value in batch.items()}


def is_oom(err: BaseException) -> bool:
    """Whether an exception means the device ran out of memory (torch's OutOfMemoryError, cuDNN/cuBLAS alloc)."""
    import torch

    if isinstance(err, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)
