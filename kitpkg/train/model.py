"""The LightningModule around any timm model: on-device normalisation, losses, the validation metric, TTA, timm
optimizers and schedules.

Batches come from the loader as uint8 B×3×H×W; the module turns them into normalised floats on the device (mean/std from
timm's data config for the model), so the loader ships 4× fewer bytes and nothing is hard-coded per model. What acts on
a training batch from outside the network (step seeding, the GPU augmentation stage, mixup, weight EMA) is a callback
of the fold's recipe (recipe.py); the module reads its decisions (device, metric) from that `Recipe`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

import pytorch_lightning as pl
import torch

from ..config import PATH_KEYS, Config, ModelConfig, result_dict, to_dict
from ..data.meta import MetaEncoder
from ..errors import KitError
from ..task import Task, refused_setting
from .fp32_head import fp32_classifier
from .losses import loss_of
from .mixing import build_mixing, soft_cross_entropy
from .meta_head import MetaNet, backbone_of
from .outputs import make_val_metric, to_prob, update_val_metric
from .schedule import advance, build_scheduler, stale
from .weights import create_from_weights

if TYPE_CHECKING:
    from .recipe import Recipe


def create_timm_model(cfg: ModelConfig, num_classes: int, load_pretrained: bool = True) -> torch.nn.Module:
    """timm.create_model from the config; pretrained weights from `cfg.weights` (offline) or timm's hub."""
    kwargs: Dict[str, Any] = dict(num_classes=num_classes, drop_rate=cfg.drop_rate)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if not (load_pretrained and (cfg.pretrained or cfg.weights)):
        return _create(cfg.name, pretrained=False, **kwargs)
    if cfg.weights:
        return create_from_weights(cfg.name, cfg.weights, **kwargs)
    try:
        return _create(cfg.name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as err:
        raise KitError(f"model.pretrained: could not fetch {cfg.name} weights ({type(err).__name__}); without "
                       f"internet set model.weights to a local weights file or folder") from err


def create_classifier(cfg: ModelConfig, num_classes: int, load_pretrained: bool, meta_width: int = 0
                      ) -> torch.nn.Module:
    """The timm model, or with a metadata input (`meta_width` > 0) its pooled features joined to a meta MLP; the
    head runs in fp32 under mixed precision (fp32_head.py)."""
    if not meta_width:
        return fp32_classifier(create_timm_model(cfg, num_classes, load_pretrained))
    return MetaNet(create_timm_model(cfg, 0, load_pretrained), meta_width, num_classes)


def _create(name: str, **kwargs: Any) -> torch.nn.Module:
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise KitError(f"model.name: unknown timm model {name!r} (see timm.list_models())") from None
        raise


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """One dihedral view of an N×C×H×W batch (identity, flips, transposes, 90° rotations)."""
    if view in ("transpose", "antitranspose", "rot90", "rot270") and x.shape[-1] != x.shape[-2]:
        raise KitError(f"predict.tta: {view} needs square images, got {x.shape[-2]}×{x.shape[-1]}")
    ops = {
        "identity": lambda t: t,
        "hflip": lambda t: t.flip(-1),
        "vflip": lambda t: t.flip(-2),
        "transpose": lambda t: t.transpose(-1, -2),
        "antitranspose": lambda t: t.flip(-1).flip(-2).transpose(-1, -2),
        "rot90": lambda t: t.rot90(1, (-2, -1)),
        "rot180": lambda t: t.rot90(2, (-2, -1)),
        "rot270": lambda t: t.rot90(3, (-2, -1)),
    }
    return ops[view](x)


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def portable_config(config: Config) -> Dict[str, Any]:
    """The config as plain data without paths: what checkpoints hold as hyperparameters (`weights_only` loading reads
    plain containers only; run directories move Colab -> Kaggle, so no absolute paths)."""
    data = to_dict(config)
    for key in PATH_KEYS:
        section, name = key.split(".")
        data[section][name] = None
    data["data"]["extra_train"] = []
    return data


class KitModule(pl.LightningModule):
    """A timm network trained by a fold's `Recipe`, with as many outputs as its task has (outputs.py: activation,
    validation metric; losses.py: the loss).

    `meta`: the fitted MetaEncoder's state (model.meta: a metadata branch, meta_head.py). The recipe's task's
    `score_index` is the class train.score_class scores (its AUC is the validation metric, scoring.py), recorded as
    hparams "score_index"; its `seeds_from` the fold the step draws and the loader's order derive from, recorded as
    hparams "fold"."""

    def __init__(self, recipe: "Recipe", load_pretrained: bool = False, meta: Optional[Dict[str, Any]] = None):
        super().__init__()
        # hyperparameters as plain data (never the Config object: checkpoints must load with weights_only=True),
        # without paths; `model.weights` is read once, here, when load_pretrained
        hparams = {"config": portable_config(recipe.config), "num_classes": recipe.num_classes, "meta": meta,
                   "score_index": recipe.task.score_index, "fold": recipe.seeds_from}
        if recipe.target_scale is not None:  # only then: the checkpoints of the other kinds stay as they were
            hparams["target_scale"] = [list(v) for v in recipe.target_scale]
        self.save_hyperparameters(hparams)
        self.recipe = recipe
        self.task = recipe.task
        self.num_classes = recipe.num_classes
        self.meta_width = MetaEncoder.from_state(meta).width if meta else 0
        self.model = create_classifier(recipe.config.model, self.num_classes, load_pretrained, self.meta_width)
        from timm.data import resolve_model_data_config

        data_cfg = resolve_model_data_config(backbone_of(self.model))
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.loss_fn = loss_of(recipe.config.train, self.task)
        if recipe.target_scale is not None:  # regression: trains on standardised targets (recipe.target_scale)
            # persistent buffers: checkpoints (and so a resume, and the best weights) keep the scale trained with
            self.register_buffer("target_mean", torch.tensor(recipe.target_scale[0], dtype=torch.float32))
            self.register_buffer("target_std", torch.tensor(recipe.target_scale[1], dtype=torch.float32))
        self.channels_last = recipe.device.channels_last
        self._compiled: Optional[torch.nn.Module] = None
        self._make_metrics()
        # (epoch, loss sum, count) of the running train loss; saved in checkpoints as plain numbers. While training
        # the sum is a float64 tensor on the device: adding to it needs no sync (float(loss) synced every step)
        self._epoch_loss: list = [-1, 0.0, 0]

    def _make_metrics(self) -> None:
        self.metric_name = self.recipe.metric
        self.val_metric = make_val_metric(self.task)

    # --- input pipeline on the device -------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (0..255) or float (0..1) B×3×H×W -> normalised float, channels_last when enabled."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss: soft-target cross entropy for mixed multi-class targets, else train.loss."""
        if target.ndim == 2 and self.task.kind == "multiclass":  # mixed (train.mixup): soft targets
            return soft_cross_entropy(logits, target)
        return self.loss_fn(logits, self.loss_target(target))

    def loss_target(self, target: torch.Tensor) -> torch.Tensor:
        """The target as the loss takes it: standardised for a task predicting values, else as it is."""
        return target if self.task.probabilities else self.standardise(target)

    def standardise(self, target: torch.Tensor) -> torch.Tensor:
        """Regression targets (B or B×K, the CSV's units) on the scale the network's outputs are trained on."""
        target = target.float().reshape(len(target), -1)
        return (target - self.target_mean) / self.target_std

    def in_units(self, outputs: torch.Tensor) -> torch.Tensor:
        """The network's outputs in the CSV's units (regression; other tasks' outputs unchanged)."""
        if self.task.probabilities:
            return outputs
        return outputs.float() * self.target_std + self.target_mean

    def forward(self, images: torch.Tensor, meta: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (B×num_classes) of a raw image batch (and its batch["meta"] when the model has a meta branch)."""
        net = self._compiled or self.model
        if self.meta_width:
            if meta is None:
                raise KitError("model.meta: the batch has no \"meta\" columns; build the data module with the "
                               "config's model.meta (train/cv.py make_datamodule)")
            return net(self.preprocess(images), meta)
        return net(self.preprocess(images))

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.recipe.config.train.compile and self._compiled is None:
            # compiled wrapper kept outside the module tree: state_dict keys stay the plain timm names
            object.__setattr__(self, "_compiled", torch.compile(self.model))

    # --- training ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        # the batch as the recipe's callbacks left it: augmented and mixed (recipe.py)
        loss = self.train_loss(self(batch["image"], batch.get("meta")), batch["target"])
        n = len(batch["id"])
        if self._epoch_loss[0] != self.current_epoch:  # keyed by epoch: a mid-epoch resume keeps the restored sum
            self._epoch_loss = [self.current_epoch, 0.0, 0]
        # python float + tensor: the restored (or zero) sum joins the device tensor exactly; float64 as the old float
        self._epoch_loss[1] = self._epoch_loss[1] + loss.detach().to(_sum_dtype(loss.device)) * n
        self._epoch_loss[2] += n
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        return loss

    def train_loss_epoch(self) -> Optional[float]:
        """Mean train loss over this epoch's samples so far (this rank)."""
        epoch, total, count = self._epoch_loss
        return float(total) / count if count and epoch == self.current_epoch else None

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"], batch.get("meta"))
        target = batch["target"]
        loss = self.loss_fn(logits, self.loss_target(target))
        n = len(batch["id"])
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=n)
        update_val_metric(self.task, self.val_metric, self.in_units(logits), target)
        self.log(self.metric_name, self.val_metric, on_epoch=True, prog_bar=True, batch_size=n)

    def predict_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Any]:
        """Scores averaged over the TTA views: probabilities (predict.average: prob) or logits (logit)."""
        predict = self.recipe.config.predict
        views = ["identity", *predict.tta]
        total = None
        for view in views:
            logits = self.in_units(self(apply_view(batch["image"], view), batch.get("meta")).float())
            score = logits if predict.average == "logit" else to_prob(self.task, logits)
            total = score if total is None else total + score
        score = (total / len(views)).cpu()  # the host copy syncs anyway: checking it is free
        if not torch.isfinite(score).all():
            bad = [str(i) for i, ok in zip(batch["id"], torch.isfinite(score).all(-1).tolist()) if not ok]
            raise KitError(f"fold {self.hparams.get('fold')}: {len(bad)} predictions are not finite (ids {bad[:3]}): "
                           f"non-finite weights or inputs (a model.meta column holding inf?); nothing is written")
        return {"id": list(batch["id"]), "target": batch["target"].detach().cpu(), "score": score}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        epoch, total, count = self._epoch_loss
        checkpoint["kitpkg_epoch_loss"] = [epoch, float(total), count]  # plain numbers (weights_only loading)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self._epoch_loss = list(checkpoint.get("kitpkg_epoch_loss", [-1, 0.0, 0]))
        if stale(checkpoint.get("lr_schedulers", [])):
            checkpoint["lr_schedulers"] = []  # keep the scheduler configure_optimizers built (restored before it)

    # --- optimizer and schedule --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        config = self.recipe.config
        optimizer = build_optimizer(self.model, config)
        if config.sched.name == "none":
            return optimizer
        updates = self._updates_per_epoch() if config.sched.per_update else 0
        per_update = bool(updates)  # unknown epoch length: fall back to per-epoch steps
        scheduler = build_scheduler(optimizer, config, updates)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step" if per_update else "epoch"}}

    def _updates_per_epoch(self) -> int:
        # Not trainer.estimated_stepping_batches: it sets up the train loader before the checkpoint's loops are
        # restored, so Lightning would never load a stateful loader's position (the resumed epoch would restart).
        # The datamodule hands out one cached train loader, the same object the fit loop then uses.
        dm = self.trainer.datamodule
        if dm is not None:
            batches = len(dm.train_dataloader())
        else:
            total = self.trainer.estimated_stepping_batches  # plain loaders passed to fit(): no resume concern
            if total == float("inf") or not total:
                return 0
            return max(1, int(total) // max(1, self.trainer.max_epochs))
        return max(1, -(-batches // self.trainer.accumulate_grad_batches))

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # timm schedulers take the update count / the next epoch explicitly (not torch's step() protocol)
        if not hasattr(scheduler, "step_update"):  # a torch scheduler, e.g. the LR finder's own
            scheduler.step()
        elif self._per_update_active():
            advance(scheduler, self.global_step)  # updates done = index of the next update
        else:
            advance(scheduler, self.current_epoch + 1)

    def _per_update_active(self) -> bool:
        configs = self.trainer.lr_scheduler_configs
        return bool(configs) and configs[0].interval == "step"

    def current_lr(self) -> float:
        """Learning rate of the first parameter group."""
        return float(self.trainer.optimizers[0].param_groups[0]["lr"])


def build_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """timm's optimizer named by optim.* (lookahead_ prefixed when asked); KitError for an unknown name."""
    from timm.optim import create_optimizer_v2

    o = config.optim
    name = f"lookahead_{o.name}" if o.lookahead else o.name
    try:
        return create_optimizer_v2(model, opt=name, lr=o.lr, weight_decay=o.weight_decay)
    except (AssertionError, ValueError, KeyError) as err:
        raise KitError(f"optim.name: timm has no optimizer {name!r} ({err}); use e.g. adamw, radam, lamb, sgd"
                       ) from None


def check_components(config: Config, task: Task) -> None:
    """Fail (KitError naming the key) on a model, loss, optimizer or schedule the fit would refuse -- before a run
    directory is written. Builds nothing big and touches no network: the names are checked on a 1-parameter probe."""
    import timm

    if not timm.is_model(config.model.name):
        raise KitError(f"model.name: unknown timm model {config.model.name!r} (see timm.list_models())")
    refused = refused_setting(task, result_dict(config))
    if refused:
        raise KitError(refused)
    loss_of(config.train, task)
    build_mixing(config.train.mixup, task, config.train.loss)
    task.monitor(config.train.monitor)  # a key the run never logs would never pick a best checkpoint
    optimizer = build_optimizer(torch.nn.Linear(1, 1), config)
    if config.sched.name != "none":
        build_scheduler(optimizer, config, 1 if config.sched.per_update else 0)
