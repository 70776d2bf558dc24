"""The CPU stage (`data.aug.cpu`): an albumentations pipeline in albumentations' own serialisation format.

A user pastes `A.to_dict(my_compose)` (or its bare ``transform`` part) into the YAML; `build_cpu_stage` builds it with
`A.from_dict` and turns every mistake into a one-line KitError naming the config key and the transform. The loader
workers apply it to each decoded HWC uint8 training image with `augment_sample`, seeded by `sample_seed(seed, epoch,
batch, index)`: the augmentation of a sample is a pure function of its place in the epoch, so a resumed epoch repeats it
whatever the worker count.
"""
from __future__ import annotations

import difflib
import math
import random
import warnings
from typing import Any, List, Mapping, Optional

import numpy as np

from ..errors import KitError


def build_cpu_stage(spec: Optional[Mapping[str, Any]], key: str = "data.aug.cpu") -> Any:
    """An albumentations Compose from an `A.to_dict` spec (full or bare ``transform`` dict); None/empty -> None."""
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    if not isinstance(spec, Mapping):
        raise KitError(f"{key}: expected a mapping written by albumentations' A.to_dict(compose), got "
                       f"{type(spec).__name__}")
    root = spec.get("transform", spec)
    _check_node(root, key, "transform")
    import albumentations as A

    with warnings.catch_warnings():
        # albumentations only warns about unknown arguments; here they are mistakes (_check_node names the transform)
        warnings.filterwarnings("error", message=r"Argument\(s\) .* are not valid")
        try:
            built = A.from_dict({"transform": dict(root)})
        except (ValueError, TypeError, KeyError, UserWarning) as err:
            raise KitError(f"{key}: {_reason(err)}") from None
    # one transform (or a OneOf) as the whole stage: wrap it, so every stage is a Compose with its own generators
    return built if isinstance(built, A.Compose) else A.Compose([built])


def sample_seed(seed: int, epoch: int, batch: int, index: int) -> int:
    """The seed of one sample's CPU augmentation: a pure function of (run seed, epoch, batch, index in the batch)."""
    # the same SeedSequence the loader seeds batch transforms with, one level deeper
    return int(np.random.SeedSequence([int(seed), int(epoch), int(batch), int(index)]).generate_state(1)[0])


def augment_sample(stage: Any, image: np.ndarray, seed: int) -> np.ndarray:
    """Apply a built CPU stage to one HWC uint8 image, deterministically for `seed` (training only)."""
    if stage is None:
        return image
    _seed_tree(stage, int(seed))
    return stage(image=image)["image"]


def _seed_tree(stage: Any, seed: int) -> None:
    """Seed every transform of the pipeline: one shared pair of generators, drawn from in pipeline order."""
    # albumentations 2.x gives each transform its own generators and `set_random_seed` makes a fresh pair for every
    # one of them, per sample; one shared pair costs a sixth of that (README, benchmark table).
    nodes = [stage]
    for node in nodes:
        nodes += list(getattr(node, "transforms", None) or ())
    if not all(hasattr(n, "random_generator") and hasattr(n, "py_random") for n in nodes):
        stage.set_random_seed(seed)  # another albumentations layout: its own API
        return
    rng, py = np.random.default_rng(seed), random.Random(seed)
    for node in nodes:
        node.random_generator, node.py_random = rng, py


# --- validation: name the transform that is wrong ------------------------------------------------------------------
def _check_node(node: Any, key: str, where: str) -> None:
    """Refuse a node that is no transform mapping, names no known transform, or has arguments it rejects."""
    if not isinstance(node, Mapping):
        raise KitError(f"{key}: {where} is {type(node).__name__}, expected a transform mapping with "
                       "'__class_fullname__' (paste what A.to_dict(compose) returns)")
    name = node.get("__class_fullname__")
    if not isinstance(name, str):
        raise KitError(f"{key}: {where} has no '__class_fullname__' (paste what A.to_dict(compose) returns)")
    known = _registry()
    short = name.split(".")[-1]
    if short not in known:
        close = difflib.get_close_matches(short, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KitError(f"{key}: {where}: unknown albumentations transform {name!r} in albumentations "
                       f"{_version()}{hint}")
    children = node.get("transforms")
    if children is not None:
        if not isinstance(children, list):
            raise KitError(f"{key}: {where} ({short}).transforms must be a list of transforms")
        for i, child in enumerate(children):
            _check_node(child, key, f"{where}.transforms[{i}]")
        return
    _build_leaf(node, key, f"{where} ({short})")


def _build_leaf(node: Mapping[str, Any], key: str, where: str) -> None:
    import albumentations as A

    for arg, value in node.items():  # albumentations takes some NaN/inf silently: a crash or blank images mid-epoch
        if not all(math.isfinite(v) for v in _numbers_in(value)):
            raise KitError(f"{key}: {where}: {arg}={value!r}; numbers must be finite")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            A.from_dict({"transform": dict(node)})
        except (ValueError, TypeError, KeyError) as err:
            raise KitError(f"{key}: {where}: {_reason(err)}") from None
    for w in caught:
        if "are not valid" in str(w.message):
            bad = sorted(set(node) - {"__class_fullname__"} - set(_accepted(node["__class_fullname__"])))
            args = ", ".join(map(repr, bad)) or str(w.message)
            raise KitError(f"{key}: {where}: invalid argument(s) {args} in albumentations {_version()}")


def _numbers_in(value: Any) -> List[float]:
    """Every number in an argument value, nested lists included (bools are no numbers)."""
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers_in(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _accepted(name: str) -> List[str]:
    import inspect

    cls = _registry()[name.split(".")[-1]]
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def _reason(err: BaseException) -> str:
    """One line out of albumentations' (often pydantic, multi-line) error."""
    errors = getattr(err.__cause__ or err, "errors", None)  # albumentations re-raises pydantic's ValidationError
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()) if not str(p).startswith(("tuple[", "list[")))
            return f"{loc}: {first.get('msg')} (got {first.get('input')!r})"
        except (TypeError, IndexError, AttributeError):
            pass
    if isinstance(err, KeyError):
        return f"missing or unknown key {err}"
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _registry() -> Mapping[str, Any]:
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY, register_additional_transforms

    register_additional_transforms()
    return SERIALIZABLE_REGISTRY


def _version() -> str:
    import albumentations

    return albumentations.__version__
