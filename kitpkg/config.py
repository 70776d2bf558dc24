"""Experiment config: nested dataclasses <-> YAML, validated with messages that name the dotted key; the home of defaults.

One YAML file = one experiment. Relative paths resolve against the YAML file's folder. `data.shards` names the output
folder of `kitpkg convert`; the manifest of `data.image_size` is found under it (OUT/<size>/manifest.json, else
OUT/manifest.json: `kitpkg.shards.manifest.resolve_manifest_path`), so switching 384 -> 512 is a one-line change.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import KitError
from .ranges import keyed, out_of_range, range_of, ranged
from .metrics import metric_keys
from .task import KINDS

AUTO = "auto"
TTA_VIEWS = ("hflip", "vflip", "transpose", "rot90", "rot180", "rot270", "antitranspose")
LOGGERS = ("csv", "tensorboard", "wandb")  # train.logger: Lightning's loggers (kitpkg/train/loggers.py)


def _section(cls: type) -> Any:
    """The field of a config section; its doc is the first line of the section class's docstring."""
    return keyed(default_factory=cls, doc=cls.__doc__.split("\n", 1)[0].rstrip("."))


# Every key documents itself once, in its field: keyed/ranged(..., doc="...") (kitpkg/ranges.py). `kitpkg init` writes
# that doc as the key's comment and kitpkg.starter.key_table() into the README's "Config keys" table.
@dataclass
class AugConfig:
    """Train-time augmentation: albumentations in the loader workers (cpu), batch ops on the device (gpu).

    An explicit cpu/gpu overrides the preset's stage (kitpkg/augment/stages.py); checked by building both at load."""

    # Flips are wrong for many image kinds (text, digits, anything with a left and a right), so they are off unless
    # set; the templates turn them on where they fit. Unset (null) meant on before: see CHANGED_DEFAULTS
    hflip: Optional[bool] = keyed(None, doc="without preset/gpu: random horizontal flips on the device; null/false "
                                            "= off")
    vflip: Optional[bool] = keyed(None, doc="without preset/gpu: random vertical flips on the device; null/false "
                                            "= off")
    transpose: Optional[bool] = keyed(None, doc="without preset/gpu: random transposes on the device (square images "
                                                "only); null/false = off")
    preset: Optional[str] = keyed(None, doc="null, light (flips) or isic (SIIM-ISIC 1st-place list); data.aug.cpu/gpu "
                                            "replace its stages")
    cpu: Optional[Dict[str, Any]] = keyed(None, doc="albumentations spec as A.to_dict(compose) writes it, per "
                                                    "training sample in the loader workers; {} = none")
    gpu: Optional[List[Dict[str, Any]]] = keyed(
        None, doc="list of {name: hflip|vflip|transpose|affine|distort|color|noise|cutout|..., p: ...} batch ops on "
                  "the device; [] = none")

    def __post_init__(self):
        if self.preset or self.cpu is not None or self.gpu is not None:  # else: the flags, always valid (no torch)
            from .augment.stages import check_aug

            check_aug(self)


@dataclass
class SamplingConfig:
    """Which training samples an epoch holds.

    Oversampling happens inside the partition (data/partition.py)."""

    # Keys are checked against the manifest's classes when a run opens (class_weight_targets)
    class_weights: Dict[Union[int, str], float] = ranged(
        default_factory=dict, ge=0, doc="oversampling, e.g. {1: 4} = class 1 (index or name) 4x per epoch, {1: 0} = "
                                        "never; other classes weigh 1")

    def __post_init__(self):
        # keys as text: `{1: 4}` and `{"1": 4}` are one config (and one hash); the dataset reads them as a class index
        # or name (data/dataset.py)
        self.class_weights = {str(k): v for k, v in self.class_weights.items()}


@dataclass
class DataConfig:
    """Where the shards are and how they are batched."""

    shards: str = keyed("", doc="OUT folder of `kitpkg convert` (holds <image_size>/manifest.json); relative to the "
                                "config file")
    image_size: int = ranged(384, ge=1, doc="side in px of the shard set used (OUT/<image_size>/); convert more sizes "
                                            "with --size")
    batch_size: int = ranged(32, ge=1, doc="images per step and device")
    num_workers: int = ranged(2, ge=0, doc="loader processes per device (Colab/Kaggle: 2-4)")
    folds: Optional[List[int]] = ranged(None, ge=0, doc="folds to run now; null = every fold in the manifest")
    extra_train: List[str] = keyed(default_factory=list, doc="pseudo-label shard sets from `kitpkg pseudo`: training "
                                                             "only, never validation")
    # Not in the config hash (NON_RESULT_KEYS): results do not change. The notebooks set it on Colab.
    cache_dir: Optional[str] = keyed(None, doc="local folder that shards on Drive/a URL are copied to (verified) "
                                               "before reading; null = read them in place")
    aug: AugConfig = _section(AugConfig)
    sampling: SamplingConfig = _section(SamplingConfig)


@dataclass
class ModelConfig:
    """The timm model."""

    name: str = keyed("efficientnet_b0", doc="any timm model name (timm.list_models())")
    pretrained: bool = keyed(False, doc="start from ImageNet weights (downloaded, or model.weights offline)")
    weights: Optional[str] = keyed(None, doc="offline weights: a .safetensors/.pth/.bin file or a folder holding one "
                                             "(`kitpkg weights`)")
    num_classes: Optional[int] = ranged(None, ge=1, doc="null = from the manifest: 1 (binary, sigmoid) or the number "
                                                        "of classes")
    drop_rate: float = ranged(0.0, ge=0, lt=1, doc="dropout before the classifier")
    drop_path_rate: float = ranged(0.0, ge=0, lt=1, doc="stochastic depth (timm models that have it)")
    meta: List[str] = keyed(default_factory=list, doc="per-sample manifest columns fed to the model, e.g. [sex, "
                                                      "age_approx]; encoding fit on the training folds")
    init_from: Optional[str] = keyed(None, doc="a run directory (e.g. runs/b4_384): fold k starts from its fold k "
                                               "best weights")


@dataclass
class OptimConfig:
    """Optimizer, built by timm.optim.create_optimizer_v2."""

    name: str = keyed("adamw", doc="any timm optimizer name: adamw, radam, lamb, sgd, ...")
    lr: float = ranged(1e-3, gt=0, doc="peak learning rate (`kitpkg lr-find` suggests one)")
    weight_decay: float = ranged(0.01, ge=0, doc="decoupled for adamw/radamw/lamb...; coupled L2 for adam/radam/sgd "
                                                 "(timm >= 1.0)")
    lookahead: bool = keyed(False, doc="wrap in Lookahead (radam + lookahead = Ranger)")


@dataclass
class SchedConfig:
    """LR schedule, built by timm.scheduler.create_scheduler_v2."""

    name: str = keyed("cosine", doc="cosine, step, multistep, poly, tanh, none")
    warmup_epochs: int = ranged(0, ge=0, doc="epochs of linear warmup from warmup_lr (part of train.epochs)")
    warmup_lr: float = ranged(1e-5, ge=0, doc="learning rate the warmup starts from")
    min_lr: float = ranged(1e-6, ge=0, doc="learning rate the schedule reaches at the last update")
    per_update: bool = keyed(True, doc="step the schedule every optimizer update (smooth) instead of every epoch")


MIXUP_MODES = ("batch", "pair", "elem")


@dataclass
class MixupConfig:
    """Mixup / CutMix of training batches on the device (timm.data.Mixup; kitpkg/train/mixing.py)."""

    mixup_alpha: float = ranged(0.2, ge=0, doc="mixing weight from Beta(alpha, alpha); 0 = no mixup")
    cutmix_alpha: float = ranged(0.0, ge=0, doc="CutMix box from Beta(alpha, alpha); 0 = no cutmix")
    prob: float = ranged(1.0, ge=0, le=1, doc="probability of mixing a batch (or pair/element)")
    switch_prob: float = ranged(0.5, ge=0, le=1, doc="with both alphas > 0: probability of CutMix instead of mixup")
    mode: str = keyed("batch", doc="batch, pair or elem: how often the mixing parameters are drawn")
    off_epoch: Optional[int] = ranged(None, ge=0, doc="from this epoch (0-based) on, no mixing; null = never off")
    label_smoothing: float = ranged(0.0, ge=0, lt=1, doc="smoothing of the mixed targets (instead of "
                                                         "train.label_smoothing)")


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (timm.utils.ModelEmaV3; kitpkg/train/ema.py)."""

    decay: float = ranged(0.999, gt=0, lt=1, doc="EMA decay per optimizer update")
    warmup: bool = keyed(False, doc="timm's warmup: a smaller decay over the first updates")


@dataclass
class EarlyStoppingConfig:
    """Stop a fold when train.monitor has not improved for `patience` validations (Lightning's EarlyStopping)."""

    patience: int = ranged(3, ge=1, doc="validations without improvement before the fold stops")
    min_delta: float = ranged(0.0, ge=0, doc="smallest change of train.monitor that counts as an improvement")


@dataclass
class TrainConfig:
    """The fit: precision, speed switches, loss, seeds, devices and checkpointing."""

    epochs: int = ranged(10, ge=1, doc="epochs per fold")
    # auto per GPU generation: kitpkg/train/trainer.py gpu_choice (from the compute capability, not is_bf16_supported)
    precision: str = keyed(AUTO, doc="auto = bf16-mixed (sm >= 8.0), 16-mixed (sm 7.x: T4/V100; P100), 32-true "
                                     "(older GPUs, CPU)")
    channels_last: Union[bool, str] = keyed(AUTO, doc="auto = on for tensor-core GPUs (sm >= 7.0), off otherwise; "
                                                      "true/false to force")
    compile: bool = keyed(False, doc="torch.compile the model (slow first epoch, faster after)")
    accumulate: int = ranged(1, ge=1, doc="optimizer update every this many batches")
    grad_clip: Optional[float] = ranged(None, gt=0, doc="clip the gradient norm to this; null = no clipping")
    # numpy's seed range: the loader seeds numpy with it
    seed: int = ranged(42, ge=0, le=2**32 - 1, doc="seed of the whole run; each fold derives its own seeds from it")
    deterministic: bool = keyed(False, doc="deterministic kernels (slower, bit-identical reruns)")
    task: str = keyed(AUTO, doc="what the label column(s) are: auto (from the manifest: one 0/1 column -> binary, "
                                "classes -> multiclass, several 0/1 columns -> multilabel, fractional floats or "
                                "several numeric columns -> regression; printed), or one of the kinds (ordinal, "
                                "soft: explicit only); kitpkg/task.py")
    metric: Union[str, Dict[str, Any]] = keyed(
        AUTO, doc="the CV metric, which also picks the best epoch and stops early: auto = the task's (binary, "
                  "train.score_class: auc; multiclass: accuracy; multilabel: mean_auc; regression: rmse; ordinal: qwk; "
                  "soft: kl), a name of kitpkg/metrics.py (pauc, balanced_accuracy, f1, logloss, mae, ...), a mapping "
                  "with its parameters ({name: pauc, min_tpr: 0.8}), or your Kaggle metric file (my_metric.py:score, "
                  "relative to this config's folder, with higher_is_better)")
    loss: str = keyed(AUTO, doc="auto = bce (binary, multilabel) / ce (multi-class) / mse (regression, ordinal) / "
                                "kl (soft); or focal; regression, ordinal: smooth_l1 or l1; soft: soft_ce")
    label_smoothing: float = ranged(0.0, ge=0, lt=1, doc="label smoothing of the targets; with train.mixup set "
                                                         "train.mixup.label_smoothing")
    focal_gamma: float = ranged(2.0, ge=0, doc="gamma of the focal loss")
    pos_weight: Optional[float] = ranged(None, gt=0, doc="binary loss (bce/focal): weight of the positive term, e.g. "
                                                         "3 for rare positives; null = 1")
    score_class: Optional[Union[int, str]] = ranged(None, ge=0, doc="multi-class: score (AUC), predict and submit "
                                                                    "this class (name or index); null = all")
    monitor: str = keyed(AUTO, doc="picks the best checkpoint and stops early: auto = train.metric's key "
                                   "(val_auc, val_acc, val_<name>) in its direction; or val_loss (lowest)")
    accelerator: str = keyed(AUTO, doc="auto, gpu or cpu")
    devices: Union[int, str] = ranged(AUTO, ge=1, doc="auto = one device; 2 on Kaggle's 2xT4 with a ddp strategy")
    strategy: str = keyed(AUTO, doc="auto; ddp (CLI/subprocess) or ddp_notebook (Colab/Kaggle notebooks) with "
                                    "devices: 2")
    checkpoint_every_n_steps: int = ranged(50, ge=1, doc="a kill mid-epoch loses at most this many steps")
    keep_checkpoints: int = ranged(2, ge=1, doc="step checkpoints kept per fold (besides best and end-of-epoch last)")
    # Not in the config hash (NON_RESULT_KEYS): a pause resumes exactly. Parsed at load into seconds (parse_time_limit)
    time_limit: Optional[Union[float, str, bool]] = ranged(
        None, ge=0, doc="pause in good order (resumable, exit 0) this long after the session's start (Kaggle, "
                        "Colab) or the run's (elsewhere): 11h30m, 90m, 45s or seconds; null/auto = the platform's "
                        "(Kaggle 12 h, TPU 9 h, less 15 min; else none); off = never")
    # Not in the config hash (NON_RESULT_KEYS): logs change no number. metrics.csv is written either way
    logger: List[str] = keyed(default_factory=list, doc=f"Lightning loggers per fold, any of {', '.join(LOGGERS)} "
                                                        "(e.g. [csv, tensorboard]) under <run dir>/logs/; wandb runs "
                                                        "offline without internet; [] = none")
    mixup: Optional[MixupConfig] = keyed(None, doc="mixup/cutmix of training batches (timm Mixup); null = off")
    ema: Optional[EmaConfig] = keyed(None, doc="EMA of the weights, used for validation, the best checkpoint, OOF "
                                               "and test; null = off")
    early_stopping: Optional[EarlyStoppingConfig] = keyed(None, doc="stop a fold when train.monitor stops improving; "
                                                                    "null = train every epoch")

    def __post_init__(self):
        self.time_limit = parse_time_limit(self.time_limit)


_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m(?:in)?)?(?:(\d+(?:\.\d*)?)s)?$")


def parse_time_limit(value: Any) -> Optional[float]:
    """train.time_limit in seconds: None (null/auto: the platform's default), 0.0 (off/false/0: no limit) or > 0."""
    if value is None or value == AUTO:
        return None
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return 0.0
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # its range (>= 0, finite) is checked with every number's
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        match = _DURATION_RE.match(text)
        if _FLOAT_RE.match(text):
            seconds = float(text)
        elif match and text:
            hours, minutes, secs = (float(g or 0) for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
    if seconds is None or not 0 <= seconds < float("inf"):
        raise KitError(f"train.time_limit: expected a duration such as 11h30m, 90m, 45s or seconds, auto or off, "
                       f"got {value!r}")
    return seconds


@dataclass
class PredictConfig:
    """Test-time augmentation and how views are averaged."""

    tta: List[str] = keyed(default_factory=list, doc=f"extra views: {', '.join(TTA_VIEWS)}")
    average: str = keyed("prob", doc="prob: mean of probabilities; logit: mean of logits, then sigmoid/softmax")


@dataclass
class OutputConfig:
    """Where results go and the competition's submission format."""

    run_dir: Optional[str] = keyed(None, doc="null = runs/<name> beside the config file")
    id_col: str = keyed("image_name", doc="id column of the submission")
    pred_col: str = keyed("target", doc="prediction column of the submission")
    sample_submission: Optional[str] = keyed(
        None, doc="the competition's sample_submission.csv (relative to this config's folder): the submission gets "
                  "exactly its columns, ids and row order (class names or ids, a probability per class, a column per "
                  "label or space-separated tags); null = id_col,pred_col")


@dataclass
class Config:
    """One experiment."""

    name: str = keyed("", doc="experiment name; null/empty = the config file's stem")
    data: DataConfig = _section(DataConfig)
    model: ModelConfig = _section(ModelConfig)
    optim: OptimConfig = _section(OptimConfig)
    sched: SchedConfig = _section(SchedConfig)
    train: TrainConfig = _section(TrainConfig)
    predict: PredictConfig = _section(PredictConfig)
    output: OutputConfig = _section(OutputConfig)
    source: Optional[str] = field(default=None, compare=False, repr=False)  # the YAML it came from (not serialized)


def section_of(tp: Any) -> Optional[type]:
    """The section class a key's type hint holds (X or Optional[X] for a dataclass X), or None for a plain key."""
    found = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
    return found[0] if found else None


def config_keys(cls: type = Config, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, Optional[type]]]:
    """(dotted key, its field, its section class or None) of every config key in file order, each section before its
    keys; an optional section's keys (train.mixup.prob) included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        section = section_of(hints[f.name])
        yield prefix + f.name, f, section
        if section is not None:
            yield from config_keys(section, f"{prefix}{f.name}.")


CHOICES = {
    "train.precision": (AUTO, "32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64"),
    "train.task": (AUTO, *KINDS),
    "train.loss": (AUTO, "bce", "ce", "focal", "mse", "smooth_l1", "l1", "kl", "soft_ce"),  # the losses of task.KINDS
    "train.monitor": (AUTO, *metric_keys(), "val_loss"),
    "predict.average": ("prob", "logit"),
}
# Keys that change how a run is executed but not its numbers: excluded from the config hash so a run can be resumed with
# more workers, other fold selections, another submission format, or moved from Colab to Kaggle (paths differ there;
# the shard sets' contents are fingerprinted separately by the CV runner).
# model.init_from is a path: the run it names is identified in state.json by its config hash instead (train/init_from.py)
NON_RESULT_KEYS = ("name", "data.num_workers", "data.folds", "data.shards", "data.extra_train", "data.cache_dir",
                   "model.init_from", "train.logger",
                   "model.weights", "train.checkpoint_every_n_steps", "train.keep_checkpoints", "train.time_limit",
                   "output")
PATH_KEYS = ("data.shards", "data.cache_dir", "model.weights", "model.init_from", "output.run_dir",
             "output.sample_submission")
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def accepted(key: str, f: dataclasses.Field) -> str:
    """What a key accepts beyond its type, in words: its choices or its range ('' if any value of its type)."""
    if key in CHOICES:
        return ", ".join(CHOICES[key])
    rng = range_of(f)
    return str(rng) if rng is not None else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, Dict):
        return "mapping"
    return "anything" if tp is Any else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp`; return it converted (int -> float, '1e-3' -> float)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except KitError:
                continue
        raise KitError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise KitError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):  # a free-form mapping (an albumentations spec, class weights): keys and values checked
        if not isinstance(value, dict):
            raise KitError(f"{key}: expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {_convert(k, key_tp, f"{key} key"): _convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise KitError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):  # YAML 1.1 reads 1e-3 as a string
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool) and key in CHOICES:
            return str(value)  # precision: 32 / 16
    raise KitError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _from_dict(cls: type, data: Dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise KitError(f"{prefix}{key}: unknown key (known keys of {prefix.rstrip('.') or 'the config'}: {known})")
        kwargs[key] = _convert(value, hints[key], prefix + key)
    return cls(**kwargs)


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg: Any, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, last, value)


def validate(config: Config) -> Config:
    """Check values beyond types (choices, declared ranges, TTA names); raise KitError naming the key."""
    for key, choices in CHOICES.items():
        if _get(config, key) not in choices:
            raise KitError(f"{key}: expected one of {', '.join(choices)}, got {_get(config, key)!r}")
    bad = out_of_range(config)  # every number against the range its field declares (ranged(...) above)
    if bad:
        key, value, rng = bad
        raise KitError(f"{key}: must be {rng.describe(value)}, got {value!r}")
    _validate_recipe(config.train)
    if isinstance(config.train.channels_last, str) and config.train.channels_last != AUTO:
        raise KitError(f"train.channels_last: expected true, false or auto, got {config.train.channels_last!r}")
    if isinstance(config.train.devices, str) and config.train.devices != AUTO:
        raise KitError(f"train.devices: expected an int or auto, got {config.train.devices!r}")
    folds = config.data.folds
    if folds is not None and len(set(folds)) != len(folds):
        raise KitError(f"data.folds: expected distinct fold numbers >= 0 (or null for every fold), got {folds}")
    for i, view in enumerate(config.predict.tta):
        if view not in TTA_VIEWS:
            raise KitError(f"predict.tta[{i}]: unknown view {view!r}; use {', '.join(TTA_VIEWS)}")
    for i, name in enumerate(config.train.logger):
        if name not in LOGGERS:
            raise KitError(f"train.logger[{i}]: unknown logger {name!r}; use {', '.join(LOGGERS)}")
    if not config.data.shards:
        raise KitError("data.shards: required (the output folder of `kitpkg convert`)")
    sample = config.output.sample_submission
    if sample and "://" not in sample and not Path(sample).is_file():  # refused before any training
        raise KitError(f"output.sample_submission: {sample}: no such file; give the competition's "
                       f"sample_submission.csv (relative to the config's folder) or null")
    return config


def _validate_recipe(train: TrainConfig) -> None:
    """What the ranges of train.mixup cannot say: its mode, one alpha > 0, one place for label smoothing."""
    m = train.mixup
    if m is None:
        return
    if m.mode not in MIXUP_MODES:
        raise KitError(f"train.mixup.mode: must be one of {', '.join(MIXUP_MODES)}, got {m.mode!r}")
    if not (m.mixup_alpha > 0 or m.cutmix_alpha > 0):
        raise KitError("train.mixup: mixup_alpha and cutmix_alpha are both 0; set one > 0 or train.mixup: null")
    if train.label_smoothing:
        raise KitError("train.label_smoothing: with train.mixup set train.mixup.label_smoothing instead (the "
                       "mixed targets are smoothed there; both would smooth twice)")


def class_weight_targets(class_weights: Dict[Any, float], manifest: Any) -> Dict[Any, float]:
    """{target: weight} of `data.sampling.class_weights` for a shard set (`manifest`): a key is a class name of a
    text label or a class index / numeric label. KitError for a key naming no class of the manifest, or weights that
    leave every class out (an empty epoch); checked when a run opens, before anything is written."""
    if not class_weights:
        return {}  # nothing to check (a manifest of float targets counts no classes)
    names = manifest.classes()  # text labels in target order, or None for numeric labels
    labels = set(range(len(names))) if names is not None else _numeric_labels(manifest.class_counts)
    shown = ", ".join(names) if names is not None else ", ".join(sorted(map(str, manifest.class_counts)))
    targets = {}
    for key, weight in ((str(k), w) for k, w in class_weights.items()):
        target = names.index(key) if names is not None and key in names else _as_int(key)
        if target is None or (labels and target not in labels):
            raise KitError(f"data.sampling.class_weights: key {key!r} is no class of {manifest.root} (classes: "
                           f"{shown or 'numeric labels'})")
        targets[target] = float(weight)
    if labels and not any(targets.get(t, 1.0) for t in labels):  # classes without a key weigh 1
        raise KitError(f"data.sampling.class_weights: every class of {manifest.root} has weight 0, so an epoch would "
                       "hold no sample; give at least one class a weight > 0")
    return targets


def _as_int(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None


def _numeric_labels(class_counts: Dict[str, Any]) -> set:
    """The numeric labels a manifest counted ('0', '1.0' -> 0, 1.0); empty when it counted none (then any index)."""
    out = set()
    for label in class_counts:
        try:
            out.add(float(label))
        except ValueError:
            return set()
    return out


def _resolve_paths(config: Config, base: Path) -> None:
    def resolve(p: Optional[str]) -> Optional[str]:
        if p is None or p == "" or "://" in p:
            return p
        return str((base / os.path.expanduser(p)).resolve())

    for key in PATH_KEYS:
        _set(config, key, resolve(_get(config, key)))
    config.data.extra_train = [resolve(p) for p in config.data.extra_train]
    if config.output.run_dir is None:
        config.output.run_dir = str((base / "runs" / config.name).resolve())


def config_from_dict(data: Dict[str, Any], base_dir: Union[str, Path] = ".", name: str = "experiment",
                     overrides: Sequence[str] = ()) -> Config:
    """Build a validated Config from a plain dict (YAML content); relative paths resolve against `base_dir`."""
    if not isinstance(data, dict):
        raise KitError(f"config must be a mapping of sections (data, model, optim, ...), got {type(data).__name__}")
    data = copy.deepcopy(data)
    for item in overrides:
        _apply_override(data, item)
    config = _from_dict(Config, data)
    config.name = config.name or name
    _resolve_paths(config, Path(base_dir))
    validate(config)
    check_metric(config.train, base_dir)
    return config


def check_metric(train: TrainConfig, base_dir: Union[str, Path]) -> None:
    """Refuse a train.metric that is unknown, has wrong parameters, or (train.task set) cannot score the task, and a
    metric file that is missing or unusable (loading it runs it): one line naming train.metric. With train.task auto
    the kind is known only from the manifest: the run checks it then (kitpkg/task.py make_task)."""
    from .metrics import METRICS, metric_from_spec

    spec = train.metric
    if spec == AUTO:
        return
    if isinstance(spec, dict) and spec.get("name") == AUTO:
        raise KitError("train.metric: auto takes no parameters; give a metric's name with them ({name: pauc, ...})")
    kind = train.task if train.task != AUTO else None
    if kind is not None:
        metric_from_spec(spec, base_dir, "score_class" if train.score_class is not None else kind)
        return
    name = spec.get("name") if isinstance(spec, dict) else spec
    scores = METRICS[name.strip()].kinds if isinstance(name, str) and name.strip() in METRICS else ("binary",)
    # the parameters checked for a kind the metric scores; a metric file loaded and checked (its kind comes later);
    # anything else gets the registry's one-line refusal (unknown name, not a metric)
    metric_from_spec(spec, base_dir, sorted(scores)[0])


def override(key: str, value: Any) -> str:
    """A `dotted.key=value` override whose value survives YAML parsing as is (a path with ': ', ' #' or quotes)."""
    return f"{key}={json.dumps(value)}"  # JSON is YAML


def _apply_override(data: Dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to a config dict."""
    import yaml

    if "=" not in item:
        raise KitError(f"override {item!r}: expected dotted.key=value, e.g. train.epochs=2")
    key, _, text = item.partition("=")
    *parents, last = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KitError(f"override {item!r}: {part} is not a section")
    try:
        node[last] = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise KitError(f"override {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None


def load_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> Config:
    """Read and validate a YAML experiment config; `overrides` are `dotted.key=value` strings applied on top."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise KitError(f"{path}: is a folder; --config takes the experiment YAML file (e.g. {path / 'exp.yaml'})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise KitError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise KitError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise KitError(f"{path}: cannot read the config ({err})") from None
    try:
        config = config_from_dict(data, path.parent.resolve(), path.stem, overrides)
    except KitError as err:
        raise KitError(f"{path}: {err}") from None
    config.source = str(path.resolve())
    return config


def to_dict(config: Config) -> Dict[str, Any]:
    """The config as a plain dict (what the YAML would hold), without `source`."""
    data = dataclasses.asdict(config)
    data.pop("source", None)
    return data


def to_yaml(config: Config) -> str:
    """The config as YAML text."""
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False)


def flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{dotted key: value} of a nested mapping (a config's sections: {"train.epochs": 10, ...})."""
    out: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


# Keys added after run directories already existed: left out of the hash while at their default, so a run made
# before them keeps its hash (and resumes) after an upgrade; set to anything else, they count like every key.
ADDED_KEYS = ("data.aug.preset", "data.aug.cpu", "data.aug.gpu", "data.sampling", "model.meta", "train.mixup",
              "train.ema", "train.early_stopping", "train.pos_weight", "train.score_class", "train.task",
              "train.metric", "train.time_limit", "train.logger")


# Defaults that changed after run directories existed: {key: the old default}. The new default is null (unset); a
# config that leaves such a key unset continues a run directory made under the old default with that old value
# (keep_run_defaults), so the run opens, hashes and trains as it was made. Set explicitly, a key counts as given.
CHANGED_DEFAULTS = {"data.aug.hflip": True, "data.aug.vflip": True, "data.aug.transpose": True}


def keep_run_defaults(config: Config, stored: Dict[str, Any]) -> List[str]:
    """Give the CHANGED_DEFAULTS keys that `config` leaves unset the old default where a run directory's stored
    result dict (state.json "config") holds it; return the keys set."""
    kept = [k for k, old in CHANGED_DEFAULTS.items() if _get(config, k) is None and stored.get(k) == old]
    for key in kept:
        _set(config, key, CHANGED_DEFAULTS[key])
    return kept


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in prefixes)


def result_dict(config: Config) -> Dict[str, Any]:
    """{dotted key: value} of every key that changes results (NON_RESULT_KEYS left out; no paths; ADDED_KEYS left
    out while at their default)."""
    flat = flatten(to_dict(config))
    defaults = flatten(to_dict(Config()))
    result = {k: v for k, v in flat.items() if not _under(k, NON_RESULT_KEYS)
              and not (_under(k, ADDED_KEYS) and k in defaults and v == defaults[k])}
    digest = metric_file_digest(config)
    if digest is not None:  # the user's metric picks epochs and stops folds: its code is part of the result
        result[METRIC_FILE_KEY] = digest
    return result


METRIC_FILE_KEY = "train.metric.file_sha256"  # in the result dict only when train.metric is a metric file


def metric_file_digest(config: Config) -> Optional[str]:
    """sha256 of the content of train.metric's file (relative to the config's folder), None without one or when it
    cannot be read (then the run refuses it when it loads the metric)."""
    from .metrics import is_metric_file

    spec = config.train.metric
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str) or not is_metric_file(name):
        return None
    path = (Path(config.source).parent if config.source else Path(".")) / name.strip().partition(":")[0]
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def config_hash(config: Config) -> str:
    """sha256 of the canonical JSON of `result_dict(config)`: equal hash = same numbers (given the same shards)."""
    text = json.dumps(result_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def diff_keys(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Human-readable `key: old -> new` lines for keys whose values differ between two result dicts."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys if old.get(k) != new.get(k)]


def write_config_value(path: Union[str, Path], dotted: str, value: Any) -> None:
    """Set one key in a YAML config file in place: only that value's line changes, comments and layout stay."""
    from .fsutil import atomic_write_text
    from .yamledit import set_yaml_value

    path = Path(path)
    try:
        text = set_yaml_value(path.read_text(), dotted, value)
    except KitError as err:
        raise KitError(f"{path}: {err}") from None
    atomic_write_text(path, text)
