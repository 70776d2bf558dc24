"""Larger sizes from smaller ones (`model.init_from: runs/b4_384`): fold k starts from that run's fold k best weights.

Fine-tuning at 512/768 px for a few epochs from a 384 px run instead of training from scratch. Fold k must start from
the weights that never saw fold k's validation samples, so the source run's fold k must hold the same samples: the
same shard set (equal manifest fingerprints), or another `--size` of the same convert (its fold k validated on the same
ids, read from its fold k OOF file). Weights are read with the safe loader (weights_only, never unpickled) and checked
name by name and shape by shape. The source is identified in this run's state.json by its config hash, not its path
(run directories move between machines).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import KitError
from ..rundir import RunDir
from .runstate import RunState, manifest_fingerprint


def source_identity(init_from: Optional[str]) -> Optional[str]:
    """The config hash of the run `model.init_from` names (what this run's state.json records of it); None when unset
    or not reachable here (a run continued elsewhere: its new folds fail in `init_fold` with the reason)."""
    if not init_from or not Path(init_from).exists():
        return None
    return _source_state(init_from).config_hash


def _source_state(init_from: str) -> RunState:
    try:
        return RunState.read(init_from)
    except KitError:
        raise KitError(f"model.init_from: {init_from} is not a run directory of `kitpkg cv` (no readable state.json); "
                       "point it at the output.run_dir of the smaller-size run") from None


def init_fold(module: Any, init_from: str, inputs: Any, k: int) -> None:
    """Load fold k's best weights of the run `init_from` into `module` (KitError when that run lacks fold k, its
    fold k holds other samples, or a parameter does not fit)."""
    from .checkpoint import best_checkpoint, load_checkpoint
    from .ema import prediction_state

    source = Path(init_from)
    if not source.exists():
        raise KitError(f"model.init_from: {source} not found; attach the smaller-size run, or set model.init_from "
                       "to null")
    state = _source_state(init_from)
    if not state.is_done(k):
        raise KitError(f"model.init_from: {source} has no finished fold {k} (finished: {state.done_folds() or 'none'})"
                       f"; finish it there first (`kitpkg cv --folds {k}`) or leave fold {k} out of data.folds")
    _check_same_fold(source, state, inputs, k)
    path = best_checkpoint(state.paths.ckpt_dir(k))
    if path is None:
        raise KitError(f"model.init_from: {state.paths.ckpt_dir(k)} holds no intact checkpoint of fold {k}")
    # a source trained with EMA fine-tunes from its averaged weights, the ones it predicted with
    load_fitting(module, prediction_state(load_checkpoint(path)), f"{source} fold {k}")


def _check_same_fold(source: Path, state: RunState, inputs: Any, k: int) -> None:
    """Refuse a source run whose fold k validated on other samples than fold k here."""
    from .predict import fold_ids, read_csv

    if state.fingerprints.get("manifest") == manifest_fingerprint(inputs.manifest):
        return  # the same shard set
    oof = RunDir(source).fold_oof(k)
    if not oof.exists():
        raise KitError(f"model.init_from: {oof} is missing, so fold {k} of that run cannot be compared with fold {k} "
                       "here; re-run `kitpkg cv` there to write it")
    theirs, ours = set(read_csv(oof)["id"].astype(str)), set(fold_ids(inputs.manifest, "val", k))
    if theirs != ours:
        raise KitError(f"model.init_from: fold {k} of {source} validated on other samples than fold {k} here "
                       f"({len(theirs ^ ours)} ids differ); init_from needs the same folds: another --size of the same "
                       "`kitpkg convert` output")


def load_fitting(module: Any, weights: Dict[str, Any], where: str) -> None:
    """Copy `weights` into `module`: every parameter of the module must be there with its shape (KitError naming the
    first that is not); extra entries of the source (e.g. an EMA copy the module lacks) are left out."""
    own = module.state_dict()
    for name, tensor in own.items():
        if name not in weights:
            raise KitError(f"model.init_from: {where} has no {name} (another model.name or model.meta?); init_from "
                           "needs the same architecture")
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise KitError(f"model.init_from: {name} is {tuple(weights[name].shape)} in {where} but "
                           f"{tuple(tensor.shape)} here (another model.name, num_classes or model.meta?)")
    module.load_state_dict({name: weights[name] for name in own})
