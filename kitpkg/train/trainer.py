"""Trainer construction: precision and channels_last per GPU generation, devices, and a quiet Lightning.

`auto` is chosen from the GPU's compute capability, never from `torch.cuda.is_bf16_supported()`: that counts emulated
bf16 by default and answers True on T4, V100, P100 and GTX 1080, none of which has bf16 hardware.
  sm >= 8.0  A100, L4, H100, RTX 30xx+    bf16-mixed + channels_last   bf16 tensor cores
  sm 7.x     V100, T4, RTX 20xx           16-mixed   + channels_last   fp16 tensor cores
  sm 6.0     P100                         16-mixed                     fast fp16 arithmetic, no tensor cores
  sm 6.1 …   GTX 10xx, Maxwell and older  32-true                      fp16 arithmetic at 1/64 rate (or none)
  CPU                                     32-true
channels_last pays only where tensor cores consume it (sm >= 7.0). Explicit config values are kept as given.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Set, Tuple

from ..config import AUTO, Config
from ..env import env_flag
from .gpus import check_gpus, training_gpus
from .runstate import is_rank_zero

if TYPE_CHECKING:
    from .recipe import Recipe

_PRECISION_ALIASES = {"32": "32-true", "64": "64-true"}
PROGRESS_REFRESH_STEPS = 10  # progress bar refresh (and device read of the logged loss) every this many batches
_ANNOUNCED: Set[str] = set()  # reasons already printed by this process: one line per run, not one per fold


class DeviceChoice(NamedTuple):
    """Lightning precision, channels_last, and the one-line reason printed for the user."""

    precision: str
    channels_last: bool
    reason: str

    @property
    def recipe(self) -> str:
        """e.g. "16-mixed + channels_last"."""
        return _recipe(self.precision, self.channels_last)


def gpu_choice(name: Optional[str], capability: Optional[Tuple[int, int]]) -> DeviceChoice:
    """The `auto` precision/channels_last for a device (capability None: the CPU); pure, so tests fake any GPU."""
    if capability is None:
        return DeviceChoice("32-true", False, "CPU: 32-true")
    major, minor = capability
    if major >= 8:
        precision, why = "bf16-mixed", "bf16 tensor cores"
    elif major == 7:
        precision, why = "16-mixed", "fp16 tensor cores, no bf16"
    elif (major, minor) == (6, 0):
        precision, why = "16-mixed", "fast fp16, no tensor cores"
    else:
        precision, why = "32-true", "fp16 runs at 1/64 speed here, no tensor cores"
    channels_last = major >= 7
    return DeviceChoice(precision, channels_last, f"{_label(name, capability)}: {_recipe(precision, channels_last)} "
                                                  f"({why})")


def _label(name: Optional[str], capability: Tuple[int, int]) -> str:
    short = (name or "GPU").replace("NVIDIA ", "").replace("Tesla ", "").strip() or "GPU"
    return f"{short} (sm {capability[0]}.{capability[1]})"


def _recipe(precision: str, channels_last: bool) -> str:
    return precision + (" + channels_last" if channels_last else "")


def detect_device(on_gpu: bool, strategy: str = "auto") -> DeviceChoice:
    """The `auto` choice for the first visible GPU (on_gpu) or the CPU; creates no CUDA context (see gpus.py)."""
    if not on_gpu:
        return gpu_choice(None, None)
    gpus = training_gpus(strategy)
    return gpu_choice(gpus[0].name, gpus[0].capability) if gpus else gpu_choice(None, None)


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """Lightning's precision for `train.precision`: `auto` per GPU generation (32-true on the CPU), others as given."""
    if precision == AUTO:
        return detect_device(on_gpu).precision
    return _PRECISION_ALIASES.get(precision, precision)


def resolve_device(config: Config) -> DeviceChoice:
    """precision + channels_last for this config on this machine; explicit values kept, the reason says which."""
    train = config.train
    gpus = training_gpus(str(train.strategy)) if train.accelerator in ("auto", "gpu", "cuda") else []
    # a GPU the installed torch cannot drive stops here with one line, not mid-fold with a CUDA error
    check_gpus(gpus, bool(train.compile))
    auto = gpu_choice(gpus[0].name, gpus[0].capability) if gpus else gpu_choice(None, None)
    precision = auto.precision if train.precision == AUTO else _PRECISION_ALIASES.get(train.precision, train.precision)
    channels_last = auto.channels_last if train.channels_last == AUTO else bool(train.channels_last)
    if (precision, channels_last) == auto[:2]:
        return auto
    where = auto.reason.split(":", 1)[0]
    return DeviceChoice(precision, channels_last, f"{where}: {_recipe(precision, channels_last)} (as set in the "
                                                  f"config; auto would be {auto.recipe})")


def announce(choice: DeviceChoice) -> None:
    """Print the device choice once per process (rank 0 only)."""
    if choice.reason not in _ANNOUNCED and is_rank_zero():
        _ANNOUNCED.add(choice.reason)
        print(f"kitpkg: {choice.reason}", flush=True)


class _KeepResumeNews(logging.Filter):
    """Lets warnings and Lightning's "Restored all states from the checkpoint at …" through; drops its other info."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.getMessage().startswith("Restored all states")


def quiet_lightning() -> None:
    """Silence Lightning's chatter that says nothing about this run (ads, internal deprecations, a false alarm)."""
    import warnings

    # "GPU available…", "💡 Tip: … litlogger": setup() already printed the hardware; the rest is advertising. Filtered,
    # not levelled: "Restored all states from the checkpoint at …" is the news that a crashed fold resumed.
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _KeepResumeNews) for f in logger.filters):
        logger.addFilter(_KeepResumeNews())
    # ShardDataset partitions samples per worker itself, so its __len__ is exact with several workers
    warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def safe_load_kwargs(trainer) -> Dict[str, Any]:
    """`weights_only=True` for Trainer.fit where Lightning has it (2.6+); older ones use torch.load's own default."""
    import inspect

    return {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}


def build_trainer(recipe: "Recipe", callbacks: Sequence[Any] = (), run_dir: Optional[Path] = None, **overrides: Any):
    """A Lightning Trainer for a fold's recipe (its device choice; devices/strategy and the loop's settings from
    train.*; kitpkg does its own checkpoints; with `run_dir`, a fit's train.logger loggers). A new Trainer setting
    goes here."""
    import pytorch_lightning as pl

    from .loggers import trainer_logging

    quiet_lightning()
    config, choice = recipe.config, recipe.device
    announce(choice)
    devices = 1 if config.train.devices == "auto" else config.train.devices  # auto: one device, DDP only when asked
    kwargs: Dict[str, Any] = dict(
        accelerator=config.train.accelerator, devices=devices, strategy=config.train.strategy,
        precision=choice.precision, max_epochs=config.train.epochs,
        accumulate_grad_batches=config.train.accumulate, gradient_clip_val=config.train.grad_clip,
        deterministic=config.train.deterministic, logger=False, enable_checkpointing=False,
        enable_progress_bar=not env_flag("KITPKG_NO_PROGRESS"), enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False,  # the loader partitions by rank itself
        default_root_dir=tempfile.gettempdir(), callbacks=list(callbacks))
    logs = trainer_logging(config, run_dir, recipe.fold)  # train.logger's loggers and their callback ({}: none)
    kwargs.update(logs, callbacks=[*kwargs["callbacks"], *logs.get("callbacks", ())])
    kwargs.update(overrides)
    if kwargs["enable_progress_bar"]:
        from pytorch_lightning.callbacks import TQDMProgressBar

        # the bar reads the logged train_loss from the device at each refresh: every step (a GPU sync) by default
        kwargs["callbacks"] = [*kwargs["callbacks"], TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS)]
    else:  # no bar (a --parallel-folds worker, whose output the parent relays): a line per validation
        from .progress import EpochLines

        kwargs["callbacks"] = [*kwargs["callbacks"], EpochLines(recipe.fold)]
    return pl.Trainer(**kwargs)
