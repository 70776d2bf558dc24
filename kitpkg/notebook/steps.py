"""The notebook's steps, each one call: shards (attached, converted, or the demo), the experiment config, the LR finder
and the submission. Every step is safe to re-run after a crash: finished work is found and reused, never redone with
different numbers (a changed config would stop the run from resuming).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import KitError
from ..fsutil import atomic_copy
from ..rundir import RunDir
from ..train.weights import WEIGHT_SUFFIXES
from .bootstrap import Environment
from .restore import restore_run

PathLike = Union[str, os.PathLike]


def demo_shards(env: Environment, image_size: int = 384, *, patients: int = 120, folds: int = 5,
                fmt: Optional[str] = None, width: int = 768, height: int = 512) -> Path:
    """Make the synthetic demo data on local disk and convert it into env.data_dir (skipped once converted); `fmt`
    None = convert's default format (this module stays importable without the shard codecs' dependencies)."""
    out = env.data_dir / "demo-shards"
    if (out / str(image_size) / "manifest.json").is_file():
        print(f"kitpkg: demo shards already in {out / str(image_size)}", flush=True)
        return out / str(image_size)
    from ..demo import demo_shards as make_demo_shards

    # JPEGs go to local scratch (thousands of small files are what Drive handles worst); only shards go to data_dir
    formats = {"fmt": fmt} if fmt else {}
    make_demo_shards(env.scratch_dir / "demo-source", out, image_size, **formats, folds=folds, shard_samples=256,
                     overwrite=True, progress=not os.environ.get("KITPKG_NO_PROGRESS"), n_patients=patients,
                     images_per_patient=4, n_test=max(10, patients // 2), width=width, height=height, seed=0)
    return out / str(image_size)


def find_shards(env: Environment, image_size: int, *, demo: bool = False, **demo_options) -> Path:
    """An attached (Kaggle input) or already converted shard set of `image_size`; else the demo (if `demo`) or a
    KitError saying how to attach or convert one."""
    found = env.find_manifest(image_size)
    if found is not None:
        print(f"kitpkg: using the shards in {found}", flush=True)
        return found
    if demo:
        return demo_shards(env, image_size, **demo_options)
    raise KitError(f"no shard set of {image_size} px attached or under {env.data_dir}: attach the output of "
                   f"`kitpkg convert` as a dataset (`kitpkg dataset-meta OUT --slug NAME`, then `kaggle datasets "
                   f"create -p OUT`), or convert here with kitpkg.convert(images, csv, '{env.data_dir}/shards')")


def experiment(env: Environment, shards: PathLike, name: str = "demo", *, base: PathLike = "demo",
               overrides: Sequence[str] = ()):
    """A validated Config: a YAML (a packaged name such as 'demo', or a path) + overrides, run dir under env.run_dir;
    on Colab data.cache_dir = env.cache_dir (shards are copied from Drive to local disk before reading); on Kaggle an
    attached copy of this run (same config) is copied into the run dir to continue it."""
    from ..config import load_config, override

    path = Path(base)
    if not path.suffix:
        path = Path(__file__).resolve().parents[1] / "configs" / f"{base}.yaml"
    cache = [override("data.cache_dir", str(env.cache_dir))] if env.cache_dir is not None else []
    # the caller's overrides come last and win
    config = load_config(path, overrides=[override("name", name), override("data.shards", str(shards)),
                                          override("output.run_dir", str(env.run_dir / name)), *cache, *overrides])
    if config.model.pretrained and not config.model.weights and not env.internet:
        config.model.weights = str(_offline_weights(env, config.model.name))
    # before anything writes into the run dir: an attached copy of this run (Kaggle) continues here
    restore_run(config.output.run_dir, config, env.attached.runs, expect=lambda run: _as_after_find_lr(config, run))
    return config


def _offline_weights(env: Environment, model: str) -> Path:
    for path in env.attached.weights:
        if any(path.name == model + suffix for suffix in WEIGHT_SUFFIXES):  # as `kitpkg weights` names them
            return path
    raise KitError(f"model.pretrained: no internet and no attached weights for {model}; on a machine with internet run "
                   f"`kitpkg weights {model} OUT`, upload OUT as a Kaggle dataset and attach it (or set "
                   f"model.pretrained=false)")


def find_lr(config, fold: int = 0, **options) -> Optional[float]:
    """Run the LR finder once per config and set config.optim.lr to its suggestion; a re-run reuses the suggestion."""
    from ..config import config_hash
    from ..fsutil import atomic_write_text

    run_dir = Path(config.output.run_dir)
    cache = RunDir(run_dir).lr_cache  # {config hash: suggestion}: the notebook's re-runs reuse it
    key = config_hash(config)  # taken before optim.lr changes: the same cells give the same key after a crash
    known = _lr_cache(run_dir)
    if key in known:
        lr, plot = known[key]["suggestion"], run_dir / known[key]["plot"]
        print(f"kitpkg: the LR finder already ran for this config (plot: {plot})", flush=True)
    else:
        from ..train.lr_find import run_lr_find
        from ..train.parallel import visible_gpus

        # with a GPU, the sweep runs in a spawned child: CUDA initialised here would stop ddp_notebook later (child.py)
        if visible_gpus(config):
            from ..train.child import call_in_child

            result = call_in_child(run_lr_find, config, run_dir, fold=fold, **options)
        else:
            result = run_lr_find(config, run_dir, fold=fold, **options)
        lr, plot = result["suggestion"], Path(result["plot"])
        lr = None if lr is None else float(f"{lr:.3g}")
        known[key] = {"suggestion": lr, "plot": os.path.relpath(plot, run_dir)}  # relative: the run dir moves
        atomic_write_text(cache, json.dumps(known, indent=1))
    if lr is None:
        print(f"kitpkg: no LR suggestion (flat or short loss curve; see {plot}); keeping lr = {config.optim.lr}")
        return None
    config.optim.lr = lr
    print(f"kitpkg: optim.lr = {lr:g} (plot: {plot})", flush=True)
    return lr


def plan(config, sizes: Optional[Sequence[int]] = None, steps: int = 30):
    """`kitpkg plan` in a cell: time a few training steps here, print the projected fold and CV time against the
    session budget (stored as plan.json in the run directory); with a GPU in a spawned child, as find_lr."""
    from ..train.parallel import visible_gpus
    from ..train.plan import run_plan

    run_dir = config.output.run_dir
    if visible_gpus(config):
        from ..train.child import call_in_child

        result = call_in_child(run_plan, config, run_dir, sizes=sizes, steps=steps)
    else:
        result = run_plan(config, run_dir, sizes=sizes, steps=steps)
    print(result.summary(), flush=True)
    return result


def _lr_cache(run_dir: Path) -> dict:
    cache = RunDir(run_dir).lr_cache
    return json.loads(cache.read_text()) if cache.is_file() else {}


def _as_after_find_lr(config, run_dir: Path):
    """`config` as `find_lr` leaves it when run against `run_dir` (its cached suggestion applied), for comparing
    with the config a run directory was trained with."""
    import copy

    from ..config import config_hash

    lr = _lr_cache(run_dir).get(config_hash(config), {}).get("suggestion")
    if lr is None:
        return config
    found = copy.deepcopy(config)
    found.optim.lr = lr
    return found


def submit(env: Environment, result) -> Optional[Path]:
    """Print the CV summary and put submission.csv where the platform expects it (/kaggle/working on Kaggle); a run
    paused at the session budget has none yet: the summary says how to continue, and nothing fails (None)."""
    print(result.summary(), flush=True)
    if getattr(result, "paused", False):
        return None  # a Kaggle Save Version ends without an error and keeps its output for the next session
    if result.submission_path is None:
        raise KitError(f"{result.run_dir}: no submission yet (folds still to run: {result.pending}); re-run the CV "
                       "cell")
    dest = env.submit_dir / "submission.csv"
    if Path(result.submission_path).resolve() != dest.resolve():
        atomic_copy(result.submission_path, dest)
    print(f"kitpkg: submission at {dest}", flush=True)
    return dest
