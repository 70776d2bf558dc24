"""Offline pretrained weights (`model.weights`): find the file in a path or a folder (a Kaggle dataset), read it
safely (safetensors, or `torch.load(weights_only=True)`: never unpickled), and build the timm model from it."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

from ..errors import KitError

if TYPE_CHECKING:
    import torch

# what counts as a weights file, in a `model.weights` folder and in attached datasets (torch is imported to read one)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
PREFERRED_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def find_weights_file(path: str, model_name: str) -> str:
    """The weights file for `model.weights`: the file itself, or the one file in a folder (e.g. a Kaggle dataset)."""
    p = Path(path)
    if p.is_file():
        return str(p)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
        for name in PREFERRED_WEIGHT_FILES:
            for f in files:
                if f.name == name:
                    return str(f)
        named = [f for f in files if model_name in f.name]
        if len(named) == 1 or len(files) == 1:
            return str((named or files)[0])
        found = ", ".join(f.name for f in files) or "none"
        raise KitError(f"model.weights: {p} holds no single weights file for {model_name} (found: {found}); "
                       f"point model.weights at the file")
    raise KitError(f"model.weights: {p} not found; expected a .safetensors/.pth/.bin file (or a folder holding "
                   f"model.safetensors) with {model_name} weights, e.g. an attached Kaggle dataset")


def load_weights_file(file: str) -> Dict[str, torch.Tensor]:
    """The state dict in a downloaded weights file: safetensors, or torch.load(weights_only=True) -- never unpickled.

    kitpkg reads the file itself rather than handing the path to timm: timm < 1.0 (allowed by setup.py, found on
    older Kaggle images) calls plain torch.load, which unpickles arbitrary objects on torch < 2.6.
    """
    if file.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(file)
    import torch

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise KitError(f"model.weights: {file} is not a plain tensor file ({str(err).splitlines()[0][:160]}); kitpkg "
                       f"never unpickles downloads: use a .safetensors file (`kitpkg weights MODEL OUT` writes one)"
                       ) from None
    if isinstance(obj, dict):  # training checkpoints wrap the weights; the EMA copy first, as timm does
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise KitError(f"model.weights: {file} holds a {type(obj).__name__}, not a state dict (name -> tensor)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}  # DataParallel prefix


def create_from_weights(name: str, weights: str, **kwargs: Any) -> torch.nn.Module:
    """timm.create_model(name) initialised from the local weights file or folder `weights` (no download)."""
    import timm

    file = find_weights_file(weights, name)
    state_dict = load_weights_file(file)
    try:  # timm adapts the stem to in_chans and drops a classifier of another size
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state_dict), **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        raise KitError(f"model.weights: {file} does not fit {name} ({str(err).splitlines()[0][:200]})") from err
