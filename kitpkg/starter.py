"""`kitpkg init`: an experiment YAML to start from, with every key and a one-line comment, written next to the data.

The values are a shipped template's (kitpkg/configs/NAME.yaml) on top of the Config defaults; `data.shards` and
`data.image_size` point at a shard set found in the target folder (as `kitpkg convert` lays it out: OUT/<size>/).
KEY_DOCS holds the comments; tests check it names every key of the Config dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import KitError

DEFAULT_TEMPLATE = "effnet_b4_384"
KEY_DOCS = {
    "name": "experiment name; empty = this file's stem",
    "data": "where the shards are and how they are batched",
    "data.shards": "OUT folder of `kitpkg convert` (holds <image_size>/manifest.json); relative to this file",
    "data.image_size": "side in px of the shard set used (OUT/<image_size>/); convert more sizes with --size",
    "data.batch_size": "images per step and device",
    "data.num_workers": "loader processes per device (Colab/Kaggle: 2-4)",
    "data.folds": "folds to run now; null = every fold in the manifest",
    "data.extra_train": "pseudo-label shard sets from `kitpkg pseudo`: training only, never validation",
    "data.cache_dir": "local folder that shards on Drive/a URL are copied to first; null = read in place",
    "data.aug": "training augmentation: cpu (albumentations, loader workers), gpu (batch ops on the device)",
    "data.aug.hflip": "without preset/gpu: random horizontal flips on the device; null/false = off",
    "data.aug.vflip": "without preset/gpu: random vertical flips on the device; null/false = off",
    "data.aug.transpose": "without preset/gpu: random transposes (square images only); null/false = off",
    "data.aug.preset": "null, light (flips) or isic (SIIM-ISIC 1st-place list); cpu/gpu below override its stages",
    "data.aug.cpu": "albumentations spec as A.to_dict(compose) writes it, per training sample; {} = none",
    "data.aug.gpu": "list of {name: hflip|vflip|transpose|affine|distort|color|noise|cutout|..., p: ...}; [] = none",
    "data.sampling": "which training samples an epoch holds",
    "data.sampling.class_weights": "oversampling, e.g. {1: 4} = class 1 (index or name) seen 4x as often per epoch",
    "model": "the timm model",
    "model.name": "any timm model name (timm.list_models())",
    "model.pretrained": "start from ImageNet weights (downloaded, or model.weights offline)",
    "model.weights": "offline weights: a .safetensors/.pth/.bin file or a folder holding one (`kitpkg weights`)",
    "model.num_classes": "null = from the manifest: 1 (binary, sigmoid) or the number of classes",
    "model.drop_rate": "dropout before the classifier",
    "model.drop_path_rate": "stochastic depth (timm models that have it)",
    "model.meta": "per-sample manifest columns fed to the model, e.g. [sex, age_approx]; encoding fit on train folds",
    "model.init_from": "a run directory (e.g. runs/b4_384): fold k starts from its fold k best weights",
    "optim": "optimizer, built by timm.optim.create_optimizer_v2",
    "optim.name": "any timm optimizer: adamw, radam, lamb, sgd, ...",
    "optim.lr": "peak learning rate (`kitpkg lr-find` suggests one)",
    "optim.weight_decay": "decoupled for adamw/radamw/lamb...; coupled L2 for adam/radam/sgd (timm >= 1.0)",
    "optim.lookahead": "wrap in Lookahead (radam + lookahead = Ranger)",
    "sched": "learning-rate schedule, built by timm.scheduler.create_scheduler_v2",
    "sched.name": "cosine, step, multistep, poly, tanh, none",
    "sched.warmup_epochs": "epochs of linear warmup from warmup_lr before the schedule",
    "sched.warmup_lr": "learning rate at the start of the warmup",
    "sched.min_lr": "lowest learning rate the schedule reaches",
    "sched.per_update": "step the schedule every optimizer update (smooth) instead of every epoch",
    "train": "the fit: precision, speed, loss, seeds, devices, checkpoints",
    "train.epochs": "epochs per fold",
    "train.precision": "auto = bf16-mixed (sm >= 8.0), 16-mixed (T4/V100/P100), 32-true (GTX 10xx, CPU)",
    "train.channels_last": "auto = on for tensor-core GPUs (sm >= 7.0); true/false to force",
    "train.compile": "torch.compile the model (slow first epoch, faster after)",
    "train.accumulate": "optimizer update every this many batches",
    "train.grad_clip": "clip the gradient norm to this; null = no clipping",
    "train.seed": "seed of the whole run (fold k uses seed + k)",
    "train.deterministic": "deterministic kernels (slower, bit-identical reruns)",
    "train.loss": "auto = bce (binary) / ce (multi-class); or focal",
    "train.label_smoothing": "label smoothing in [0, 1)",
    "train.focal_gamma": "gamma of the focal loss",
    "train.pos_weight": "binary loss (bce/focal): weight of positives, e.g. 3 for rare ones; null = 1",
    "train.score_class": "multi-class: score (AUC), predict and submit this class, e.g. melanoma; null = all",
    "train.monitor": "auto = val_auc (binary) / val_acc (multi-class); or val_loss: picks the best checkpoint",
    "train.accelerator": "auto, gpu or cpu",
    "train.devices": "auto = one device; 2 on Kaggle's 2xT4 with a ddp strategy",
    "train.strategy": "auto; ddp (CLI) or ddp_notebook (Colab/Kaggle notebooks) with devices: 2",
    "train.checkpoint_every_n_steps": "a kill mid-epoch loses at most this many steps",
    "train.keep_checkpoints": "step checkpoints kept per fold (besides best and last)",
    "train.mixup": "null = off; {mixup_alpha: 0.2, cutmix_alpha: 0, prob: 1, switch_prob: 0.5, mode: batch, "
                   "off_epoch: null, label_smoothing: 0} (timm Mixup)",
    "train.ema": "null = off; {decay: 0.999, warmup: false}: EMA weights validate, pick best, predict OOF/test",
    "train.early_stopping": "null = off; {patience: 3, min_delta: 0}: stop when train.monitor stops improving",
    "predict": "test-time augmentation",
    "predict.tta": "extra views: hflip, vflip, transpose, rot90, rot180, rot270, antitranspose",
    "predict.average": "prob: mean of probabilities; logit: mean of logits, then sigmoid/softmax",
    "output": "where results go and the submission format",
    "output.run_dir": "null = runs/<name> beside this file",
    "output.id_col": "id column of the submission",
    "output.pred_col": "prediction column of the submission",
}
_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")


def find_shard_set(folder: Path, image_size: int) -> Optional[Tuple[Path, int]]:
    """(OUT, size) of a `kitpkg convert` output in `folder` or one of its children; `image_size` if converted."""
    for out in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else []:
        sizes = sorted(int(m.parent.name) for m in out.glob("*/manifest.json") if m.parent.name.isdigit())
        if sizes:
            return out, min(sizes, key=lambda s: (abs(s - image_size), -s))  # the template's size, else the nearest
    return None


def starter_values(template: str, folder: Path) -> Tuple[Dict[str, Any], Optional[Path]]:
    """The config values for a new experiment in `folder`, and the shard set they point at (None: none found)."""
    import yaml

    from .config import Config, config_from_dict, to_dict
    from .configs import template_path

    raw = yaml.safe_load(template_path(template).read_text()) or {}
    config_from_dict(raw)  # a template that does not validate is a bug here, not in the user's file
    values = _merged(to_dict(Config()), raw)  # every key; the template's values as written (paths not resolved)
    found = find_shard_set(folder, values["data"]["image_size"])
    if found is None:
        values["data"]["shards"] = "shards"
        return values, None
    out, size = found
    values["data"].update(shards=os.path.relpath(out, folder), image_size=size)
    return values, out / str(size)


def write_starter(name: str = "exp", template: str = DEFAULT_TEMPLATE, folder: os.PathLike = ".") -> Path:
    """Write `folder/name.yaml` from `template` (KitError if it exists); return its path."""
    from .config import Config
    from .fsutil import atomic_write_text

    folder = Path(folder)
    path = folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if path.exists():
        raise KitError(f"{path}: already exists; kitpkg init never overwrites: pick another NAME or delete the file")
    values, found = starter_values(template, folder)
    header = [f"# {path.name}: written by `kitpkg init --from {template}`; every key, one comment each.",
              f"# Train: kitpkg cv --config {path.name}"]
    atomic_write_text(path, "\n".join(header + _lines(Config, values, "")) + "\n")
    where = (f"data.shards = {values['data']['shards']} ({found.name} px)" if found else
             f"no `kitpkg convert` output found in {folder}: set data.shards to its OUT folder")
    print(f"kitpkg init: wrote {path} from {template}; {where}", flush=True)
    return path


def _merged(defaults: Dict[str, Any], raw: Dict[str, Any]) -> Dict[str, Any]:
    # sections (non-empty dicts of defaults) merge key by key; a free-form mapping (class_weights: {}) is a value
    return {k: _merged(v, raw.get(k) or {}) if isinstance(v, dict) and v else raw.get(k, v)
            for k, v in defaults.items()}


def _lines(cls: type, values: Dict[str, Any], prefix: str) -> List[str]:
    hints = typing.get_type_hints(cls)
    indent = "  " * prefix.count(".")
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        key, value = prefix + f.name, values[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            out.append(_commented(f"{indent}{f.name}:", KEY_DOCS[key]))
            out += _lines(hints[f.name], value, key + ".")
        else:
            out.append(_commented(f"{indent}{f.name}: {_scalar(value)}", KEY_DOCS[key]))
    return out


def _commented(text: str, doc: str) -> str:
    return f"{text:<40} # {doc}"


def _scalar(value: Any) -> str:
    """A YAML scalar/flow list that reads back as `value` (floats keep a dot: PyYAML reads 1e-05 as a string)."""
    import yaml

    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str) and _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # JSON is YAML: null, true, numbers, quoted strings


def _init(args: argparse.Namespace) -> int:
    write_starter(args.name, args.template, args.dir)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `kitpkg init` to the CLI."""
    from .configs import template_names

    p = sub.add_parser("init", help="write an experiment YAML (every key, commented) next to your shards")
    p.add_argument("name", nargs="?", default="exp", help="file name of the config (default: exp -> exp.yaml)")
    p.add_argument("--from", dest="template", default=DEFAULT_TEMPLATE, choices=template_names(),
                   help=f"template to start from (default: {DEFAULT_TEMPLATE}; demo is CPU-sized)")
    p.add_argument("--dir", default=".", help="folder to write into and to look for `kitpkg convert` output in")
    p.set_defaults(func=_init)
