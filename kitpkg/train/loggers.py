"""`train.logger`: Lightning's own CSV, TensorBoard and W&B loggers, one logger run per fold grouped by the run.

Where each kind writes (the run directory's logs/ folder; `k` is the fold):
  csv          logs/csv/fold{k}/version_{n}/     metrics.csv + hparams.yaml; one version per start of the fold (a
                                                 resume gets the next one: Lightning's CSVLogger empties a folder it
                                                 reopens)
  tensorboard  logs/tensorboard/fold{k}/         event files + hparams.yaml; a resume adds an event file to the same run
  wandb        logs/wandb/ (or $WANDB_DIR)       run "fold{k}" in group <run directory name>, project $WANDB_PROJECT
                                                 (default kitpkg); its id is derived from the run and the fold, so a
                                                 resumed fold appends to the same W&B run
Each logger run gets the flat config (`train.epochs`, ...), the fold and the config hash as hyperparameters, and per
validation the same figures as the kit's fold{k}/metrics.csv: val_* as logged, `lr`, and the epoch's mean training
loss as `train_loss_epoch` (`train_loss` is the per-step series Lightning logs every 50 steps). metrics.csv stays the
kit's record (checkpoint.py). Only rank 0 writes (Lightning's loggers). Without internet W&B runs offline unless
WANDB_MODE says otherwise; `wandb sync` uploads it later.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

import pytorch_lightning as pl

from ..config import LOGGERS, Config, config_hash, flatten
from ..errors import KitError
from ..rundir import RunDir
from .runstate import is_rank_zero

WANDB_PROJECT = "kitpkg"  # W&B project unless $WANDB_PROJECT names one
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}  # importable modules, first = pip
_OFFLINE_TOLD: Set[str] = set()  # W&B folders whose offline notice this process printed


def fold_name(fold: Optional[int]) -> str:
    """A fold's logger run name: fold{k} ("all" for a fit on every sample)."""
    return "all" if fold is None else f"fold{fold}"


def wandb_id(run_dir: Path, config: Config, fold: Optional[int]) -> str:
    """The W&B run id of a fold: derived from the run directory's name, the config hash and the fold, so a resumed
    fold (same run, same results config) appends to its W&B run and another run never does."""
    digest = hashlib.sha256(f"{Path(run_dir).name}|{config_hash(config)}".encode()).hexdigest()[:12]
    return f"{digest}-{fold_name(fold)}"


def hyperparameters(config: Config, fold: Optional[int]) -> Dict[str, Any]:
    """What each logger run records as hyperparameters: the flat config without paths, the fold and the config hash."""
    from .model import portable_config

    return {**flatten(portable_config(config)), "fold": fold, "config_hash": config_hash(config)}


def require(kind: str) -> None:
    """KitError (one line naming the `pip install`) when the package logger `kind` writes with is not installed."""
    modules = _PACKAGES.get(kind, ())
    for module in modules:
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue
    if modules:
        raise KitError(f"train.logger: {kind} needs the {modules[0]} package: pip install {modules[0]} (or drop "
                       f"{kind} from train.logger)")


def wandb_mode(environ: Mapping[str, str], online: Callable[[], bool]) -> Optional[str]:
    """wandb.init's mode: None when the user set WANDB_MODE (W&B reads it) or there is internet, else "offline"."""
    if environ.get("WANDB_MODE"):
        return None
    return None if online() else "offline"


def fold_loggers(config: Config, run_dir: Path, fold: Optional[int], environ: Mapping[str, str] = os.environ,
                 online: Optional[Callable[[], bool]] = None) -> List[Any]:
    """Lightning loggers of train.logger for one fold of the run in `run_dir` ([] when none is asked for); `online`
    (default: env.has_internet) decides whether W&B runs offline."""
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    logs = RunDir(Path(run_dir)).logs
    name = fold_name(fold)
    loggers: List[Any] = []
    for kind in dict.fromkeys(config.train.logger):  # a name given twice: one logger
        require(kind)
        if kind == "csv":
            loggers.append(CSVLogger(logs / "csv", name=name))
        elif kind == "tensorboard":
            loggers.append(TensorBoardLogger(logs / "tensorboard", name="", version=name, default_hp_metric=False))
        elif kind == "wandb":
            loggers.append(_wandb_logger(config, run_dir, fold, environ, online))
        else:  # config load refuses these (config.LOGGERS); a Config built in code reaches here
            raise KitError(f"train.logger: unknown logger {kind!r}; use {', '.join(LOGGERS)}")
    return loggers


def _wandb_logger(config: Config, run_dir: Path, fold: Optional[int], environ: Mapping[str, str],
                  online: Optional[Callable[[], bool]]) -> Any:
    from pytorch_lightning.loggers import WandbLogger

    from ..env import has_internet

    save_dir = Path(environ.get("WANDB_DIR") or RunDir(Path(run_dir)).logs)
    mode = wandb_mode(environ, online or (lambda: has_internet(environ)))
    if mode == "offline" and str(save_dir) not in _OFFLINE_TOLD and is_rank_zero():
        _OFFLINE_TOLD.add(str(save_dir))
        print(f"kitpkg: no internet: W&B logs offline; upload them later with `wandb sync "
              f"{save_dir / 'wandb'}/offline-run-*`", flush=True)
    save_dir.mkdir(parents=True, exist_ok=True)  # wandb falls back to a temp folder for a missing one
    extra = {"mode": mode} if mode else {}
    return WandbLogger(name=fold_name(fold), save_dir=str(save_dir), id=wandb_id(run_dir, config, fold),
                       project=environ.get("WANDB_PROJECT") or WANDB_PROJECT, group=Path(run_dir).name,
                       job_type="fold", **extra)


class FoldLogging(pl.Callback):
    """Carries a fold's loggers through its fit: the hyperparameters at its start, metrics.csv's lr and epoch train
    loss at each validation (self.log: Lightning sends them with the val_* figures), and the W&B run finished at the
    end (one W&B run per fold, also when a fold fails: its retry resumes it by id)."""

    def __init__(self, params: Dict[str, Any]):
        self.params = params

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers:  # in the training process (after a fork), rank 0 only (the loggers' rule)
            logger.log_hyperparams(self.params)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # what RunCheckpoints writes into metrics.csv beside the val_* keys; rank 0's values, as there
        pl_module.log("lr", pl_module.current_lr(), rank_zero_only=True)
        loss = pl_module.train_loss_epoch()
        if loss is not None:
            pl_module.log("train_loss_epoch", loss, rank_zero_only=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, 0)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(trainer, 1)

    def _finish(self, trainer: pl.Trainer, exit_code: int) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            logger.save()
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                import wandb

                # the next fold's WandbLogger would otherwise reuse this open run (its "already in progress" rule)
                if wandb.run is not None and wandb.run.id == logger.version:
                    wandb.finish(exit_code=exit_code)


def trainer_logging(config: Config, run_dir: Optional[Path], fold: Optional[int]) -> Dict[str, Any]:
    """Trainer keyword arguments for train.logger ({} for none, or without a run directory): `logger` and the
    FoldLogging callback under `callbacks`; Lightning's own hyperparameter logging off where it can be (FoldLogging
    logs the flat config instead of the module's nested hparams)."""
    loggers = fold_loggers(config, Path(run_dir), fold) if run_dir is not None and config.train.logger else []
    if not loggers:
        return {}
    import warnings

    # DDP: lr and the epoch train loss are rank 0's, as metrics.csv holds them; Lightning's "use sync_dist" is no news
    warnings.filterwarnings("ignore", message=r".*self\.log\('(lr|train_loss_epoch)', \.\.\., sync_dist=True\)")
    kwargs: Dict[str, Any] = {"logger": loggers, "callbacks": [FoldLogging(hyperparameters(config, fold))]}
    if "enable_autolog_hparams" in inspect.signature(pl.Trainer.__init__).parameters:  # Lightning 2.5.1+
        kwargs["enable_autolog_hparams"] = False
    return kwargs
