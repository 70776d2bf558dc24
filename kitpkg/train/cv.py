"""K-fold cross-validation from one config: per-fold fit (resumable), OOF, CV score, fold-averaged test predictions.

The run directory's layout and records are kitpkg/rundir.py's (fold k: its checkpoints, history, OOF and test
predictions, and its record with its score and where its time went; the run: state.json, oof.csv, submission.csv).
Re-running the same command after a crash skips finished folds and resumes the running one mid-epoch. Folds can
train side by side (parallel.py: `--parallel-folds N`) or on other machines and be put together (merge.py).
One fold: resume_point -> fit -> reload_best -> predict_fold -> record_fold. What a run trains on is inputs.py's
(RunInputs, load_inputs), what it returns results.py's (CVResult, fold_result).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import Config, class_weight_targets
from ..errors import KitError
from ..rundir import FOLD_OOF, CVSummary, RunDir
from . import decisions as D
from . import predict as P
from .budget import SessionBudget, continue_hint, keep_prediction_weights, run_deadline, time_is_up
from .checkpoint import BEST, RunCheckpoints, latest_intact, load_checkpoint, resumable
from .divergence import DivergenceGuard
from .ema import prediction_state
from .foldcheck import LOST, fold_weights, reopen_lost_folds, retrain_advice, weights_problem
from .init_from import init_fold
from .inputs import RunInputs, load_inputs
from .lease import check_free, hold_fold
from .meta_head import fold_meta, stored_meta
from .recipe import Recipe, build_recipe, recipe_callbacks
from .results import CVResult, fold_result, mean_std
from .runstate import RunState, is_rank_zero, relpath, run_directory
from .stopping import early_stopping
from .timing import device_fields
from .trainer import build_trainer, safe_load_kwargs


def make_module(recipe: Recipe, load_pretrained: bool, meta: Any = None):
    """The KitModule of a fold's recipe; `meta`: the fold's MetaEncoder."""
    from .model import KitModule

    return KitModule(recipe, load_pretrained=load_pretrained, meta=meta.state_dict() if meta is not None else None)


def make_datamodule(recipe: Recipe, inputs: RunInputs, meta: Any = None):
    """The ShardDataModule of a fold's recipe (extra_train sets go to training only; the training order from the
    recipe's seed); `meta`: the fold's MetaEncoder (None: fitted on the fold's training samples when model.meta is
    set, by `fitted_meta()`)."""
    from ..data.datamodule import ShardDataModule
    from ..data.dataset import TrainOptions

    config = recipe.config
    train = TrainOptions(augment=recipe.stages.cpu, class_weights=config.data.sampling.class_weights)
    return ShardDataModule(inputs.manifest, fold=recipe.fold, batch_size=config.data.batch_size,
                           num_workers=config.data.num_workers, seed=recipe.seed,
                           extra_train=inputs.extras_for(recipe.fold), image_size=config.data.image_size,
                           cache_dir=config.data.cache_dir, meta_encoder=meta, train_options=train,
                           meta=config.model.meta)


def fold_parts(recipe: Recipe, inputs: RunInputs, run_dir: Path, is_writer: bool) -> Tuple[Any, Any]:
    """(data module, MetaEncoder or None) of a fold: the encoder stored in the run directory, else fitted by the data
    module itself on the fold's training samples (and stored by `is_writer`); one ShardDataModule either way."""
    dm = make_datamodule(recipe, inputs, stored_meta(recipe.config, run_dir, recipe.fold))
    return dm, fold_meta(recipe.config, inputs, run_dir, recipe.fold, is_writer, fit=dm.fitted_meta)


def fit_fold(config: Config, inputs: RunInputs, state: RunState, k: int, deadline: Optional[float] = None) -> bool:
    """Train fold k (resuming from its newest intact checkpoint), then write its OOF and test predictions and its
    record with where the time went: resume_point -> fit -> reload_best -> predict_fold -> record_fold. False: it
    paused before `deadline` (budget.run_deadline) with a resumable checkpoint, still "running"."""
    import pytorch_lightning as pl
    import torch

    from .timing import Throughput

    ckpt_dir = state.paths.ckpt_dir(k)
    resume, trained = resume_point(state, k)
    pl.seed_everything(config.train.seed + k, workers=True, verbose=False)
    recipe = build_recipe(config, inputs, k, resume)  # every decision of how fold k trains, made once here
    dm, meta = fold_parts(recipe, inputs, state.run_dir, is_rank_zero())
    fresh = resume is None and not trained
    module = make_module(recipe, load_pretrained=fresh and not config.model.init_from, meta=meta)
    if fresh and config.model.init_from:
        init_fold(module, config.model.init_from, inputs, k)
    throughput = Throughput()
    monitor = recipe.monitor
    writer = RunCheckpoints(ckpt_dir, config.train.checkpoint_every_n_steps, config.train.keep_checkpoints, *monitor)
    pause = [] if deadline is None else [SessionBudget(deadline, writer)]  # right after the writer it saves with
    # the recipe's batch stages first (seeding, augmentation, mixing, then the EMA: before the writer, so a
    # checkpoint holds its step's average); the divergence guard before early stopping, metrics.csv or a checkpoint
    # see a non-finite fit; early stopping before the writer: the checkpoint written after a validation holds its
    # updated patience count; Throughput's arrival first and Throughput last: see timing.py
    trainer = build_trainer(recipe, callbacks=[throughput.arrival, *recipe_callbacks(recipe),
                                               DivergenceGuard(k, config.optim.lr), *early_stopping(config, *monitor),
                                               writer, *pause, throughput], run_dir=state.run_dir)
    started = time.perf_counter()
    if not trained and not fit(trainer, module, dm, state, k, resume, *pause):
        trainer.strategy.barrier("kitpkg-fit-done")
        return False
    trainer.strategy.barrier("kitpkg-fit-done")  # rank 0 publishes the last checkpoint after the others return
    best_epoch = reload_best(module, state.run_dir, k)
    frame, test_frame = predict_fold(trainer, module, dm, inputs, k, state.paths.parts(k))
    if is_rank_zero():
        figures = {"wall_s": round(time.perf_counter() - started, 2), **throughput.figures(trainer.world_size)}
        record_fold(state, k, frame, test_frame, inputs, config.predict.average, best_epoch=best_epoch,
                    **figures, **loader_figures(dm, trained), **device_fields(recipe.device, trainer.world_size))
        keep_prediction_weights(ckpt_dir)  # a done fold needs its best weights only: the run directory stays small
    trainer.strategy.barrier("kitpkg-fold-done")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


def resume_point(state: RunState, k: int) -> Tuple[Optional[Path], bool]:
    """(checkpoint to resume fold k from, or None; whether it finished training already).

    A fresh fit clears the fold's checkpoints of an earlier attempt: damaged ones would sort after the new ones (and
    survive pruning instead of them), and a stale best.ckpt would stand in for the new weights if no metric is ever
    finite."""
    ckpt_dir = state.paths.ckpt_dir(k)
    status = state.fold(k).status
    resume = latest_intact(ckpt_dir) if status == "running" else None
    # "trained" without the weights it would predict with (foldcheck's rule): train it again
    trained = status == "trained" and weights_problem(ckpt_dir) is None
    if resume is None and not trained and is_rank_zero():
        for old in [*resumable(ckpt_dir), ckpt_dir / BEST]:
            old.unlink(missing_ok=True)
    return resume, trained


def fit(trainer: Any, module: Any, dm: Any, state: RunState, k: int, resume: Optional[Path],
        budget: Optional[SessionBudget] = None) -> bool:
    """Train fold k (from `resume` when given), its status "running" while it trains and "trained" after; False
    when `budget` paused it: it stays "running", resumed from the pause's checkpoint by the next run."""
    state.update_fold(k, status="running")
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None, **safe_load_kwargs(trainer))
    if budget is not None and budget.paused:
        return False
    state.update_fold(k, status="trained")
    return True


def reload_best(module: Any, run_dir: Path, k: int) -> Optional[int]:
    """Load fold k's best weights (the rule: foldcheck.fold_weights) into `module`; return their epoch."""
    ckpt = load_checkpoint(_fold_weights(run_dir, k))
    module.load_state_dict(prediction_state(ckpt))  # the EMA's weights when train.ema is on
    return ckpt.get("epoch")


def predict_fold(trainer: Any, module: Any, dm: Any, inputs: RunInputs, k: int, part_dir: Path) -> Tuple[Any, Any]:
    """(OOF scores frame of fold k, test scores frame or None without a test split); both None off rank 0."""
    frame = P.predict_frame(trainer, module, dm.eval_dataloader("val"), part_dir, "oof",
                            P.fold_ids(inputs.manifest, "val", k))
    test_frame = None
    if inputs.manifest.select("test"):
        test_frame = P.predict_frame(trainer, module, dm.test_dataloader(), part_dir, "test",
                                     P.fold_ids(inputs.manifest, "test"))
    return frame, test_frame


def record_fold(state: RunState, k: int, frame: Any, test_frame: Any, inputs: RunInputs, space: str, **fields: Any
                ) -> None:
    """Write fold k's results: its OOF predictions (from the scores frame: id, target, s*), its test scores (id, s*),
    then its record as done with its score and `fields` (the record last: a fold is done only once its files are)."""
    from .report import epoch_score, fold_score

    oof = P.oof_rows(frame, k, inputs.task, space)
    P.write_csv(oof, state.paths.fold_oof(k))
    if test_frame is not None:
        P.write_csv(test_frame.drop(columns=P.target_cols(test_frame)), state.paths.fold_test(k))
    score = fold_score(oof, inputs.task)
    if score != score:
        import warnings

        warnings.warn(f"kitpkg: fold {k}: its validation split holds one class, so it has no AUC (NaN); its last "
                      f"epoch's weights are kept, early stopping skipped it, and the CV mean leaves it out",
                      RuntimeWarning, stacklevel=2)
    history, key = state.paths.metrics(k), inputs.task.scoring.key
    # NaN is no JSON: a fold without a score stores null
    state.update_fold(k, status="done", score=None if score != score else score, last_score=epoch_score(history, key),
                      best_val_score=epoch_score(history, key, fields.get("best_epoch")), samples=len(oof), **fields)


def loader_figures(dm: Any, trained: bool) -> Dict[str, float]:
    """{"loader_img_s": …} of the fold's training loader alone (`dm`'s, one more epoch after the fit; see timing.py);
    nothing when the fold was not trained by this process."""
    from .timing import loader_rate

    if trained:
        return {}
    rate = loader_rate(dm.train_dataloader())
    return {} if rate is None else {"loader_img_s": rate}


def _fold_weights(run_dir: Path, k: int) -> Path:
    return fold_weights(run_dir, k)


def open_run(config: Config, run_dir: Optional[os.PathLike] = None, allow_changed: Sequence[str] = (),
             inputs: Optional[RunInputs] = None, reopen_lost: bool = True) -> Tuple[RunInputs, RunState]:
    """Load the run's inputs (unless given: `load_inputs(config)`) and its state (refusing a changed config or other
    shards). reopen_lost: a fold recorded done whose best weights are gone is reset (one printed line) to be trained again.

    Names the fit would refuse (model, loss, optimizer, schedule) and model.meta columns that leak the label or are
    absent at test time are checked first: a run directory is written only for a config that can train."""
    from ..data.meta import check_meta_inputs
    from .model import check_components

    inputs = inputs if inputs is not None else load_inputs(config)
    run_dir = run_directory(run_dir or config.output.run_dir)
    check_components(config, inputs.task)
    class_weight_targets(config.data.sampling.class_weights, inputs.manifest)  # keys naming no class
    check_meta_inputs(config.model.meta, inputs.manifest, config.data.cache_dir)
    _keep_run_defaults(config, run_dir)
    state = RunState.open(run_dir, config, inputs.fingerprints(), allow_changed, task=inputs.task)
    if reopen_lost:
        reopen_lost_folds(state)
    shards = relpath(Path(inputs.manifest.root), run_dir)  # relative: a hint for `kitpkg pseudo`, not an identity
    if state.shards != shards:
        state.set("shards", shards)
    return inputs, state


def _keep_run_defaults(config: Config, run_dir: Path) -> None:
    """A run directory made when a changed default still held (config.CHANGED_DEFAULTS) continues with it, said once."""
    from ..config import keep_run_defaults

    if not RunDir(run_dir).state.exists():
        return
    kept = keep_run_defaults(config, RunState.read(run_dir).config)
    if kept and is_rank_zero():
        print(f"kitpkg: {run_dir} was made when {', '.join(kept)} defaulted to true; continuing with that (set them "
              f"in the config to silence this; new runs default to off)", flush=True)


def run_cv(config: Config, run_dir: Optional[os.PathLike] = None, folds: Optional[Sequence[int]] = None,
           train_only: bool = False) -> CVResult:
    """Train the folds not yet done (all of `data.folds`, or `folds`), then merge OOF, submission and report
    (train_only: leave that to another process, e.g. the parent of `--parallel-folds`). With 2+ GPUs visible and
    train.devices/strategy at auto, folds train side by side, one process per GPU (parallel.py), their progress
    printed here: the notebook process never touches CUDA, and no GPU idles."""
    if not train_only:
        from .parallel import gpus_for_folds, run_parallel_cv

        workers = gpus_for_folds(config)
        if workers:
            return run_parallel_cv(config, workers, run_dir, folds)
    inputs = load_inputs(config)
    D.check_sample(config, inputs.task, P.fold_ids(inputs.manifest, "test"))  # refused before anything is written
    inputs, state = open_run(config, run_dir, inputs=inputs)
    all_folds, selected = fold_selection(config, inputs, folds)
    check_free(state, [k for k in selected if not state.is_done(k)])  # a fold a live process trains: refused now
    deadline = run_deadline(config)  # the session budget: read once, as the run starts
    for k in selected:
        if not state.is_done(k):
            if time_is_up(deadline):
                return paused(inputs, state, all_folds, report=not train_only)  # not begun: the next session's
            with hold_fold(state, k):
                if not fit_fold(config, inputs, state, k, deadline):
                    return paused(inputs, state, all_folds, report=not train_only)
    if train_only:
        return fold_result(inputs, state, selected)
    return finish(config, inputs, state, all_folds)


def fold_selection(config: Config, inputs: RunInputs, folds: Optional[Sequence[int]] = None
                   ) -> Tuple[List[int], List[int]]:
    """(the run's folds: data.folds or the manifest's; the folds to train now: `folds` or all of them), checked."""
    known = inputs.manifest.folds()
    all_folds = list(config.data.folds) if config.data.folds is not None else known
    for label, selection in (("data.folds", all_folds), ("--folds", folds or [])):
        unknown = sorted(set(selection) - set(known))
        if unknown:
            raise KitError(f"{label}: folds {unknown} are not in the manifest of {config.data.shards} (it has folds "
                           f"{known}); pick from those")
    return all_folds, list(folds) if folds is not None else all_folds


def paused(inputs: RunInputs, state: RunState, all_folds: Sequence[int], report: bool = True) -> CVResult:
    """What a run paused at its session budget leaves: the finished folds' scores (their OOF and test files are
    written) and a report marked partial (`report`); how to continue is in the result's summary."""
    result = fold_result(inputs, state, all_folds)
    result.paused, result.resume_hint = True, continue_hint() if report else ""  # a worker's parent says it
    if report and is_rank_zero():
        from .report import write_report

        result.report_path = write_report(state.run_dir, pending=result.pending)
    return result


def finish(config: Config, inputs: RunInputs, state: RunState, all_folds: Sequence[int]) -> CVResult:
    """Merge what is done: oof.csv + submission.csv + report once every fold of the selection has finished."""
    result = fold_result(inputs, state, all_folds)
    monitor = result.metric
    if result.pending or not is_rank_zero():
        return result
    from .report import fold_score, write_report

    D.check_sample(config, inputs.task, P.fold_ids(inputs.manifest, "test"))  # merge, --parallel-folds: before writing
    oof = P.pd.concat([P.read_csv(state.paths.fold_oof(k)) for k in all_folds], ignore_index=True)
    expected = [i for k in all_folds for i in P.fold_ids(inputs.manifest, "val", k)]
    if list(oof["id"]) != expected:
        raise KitError(f"{state.run_dir}: OOF parts do not hold every sample of folds {list(all_folds)} exactly once; "
                       f"delete the {FOLD_OOF.format(k='*')} files and re-run")
    result.oof_path = state.paths.oof
    P.write_csv(oof, result.oof_path)
    pooled = fold_score(oof, inputs.task)
    decisions = D.fit_decisions(inputs.task, oof, D.sample_of(config))  # thresholds fitted nested over the folds
    if decisions is not None and decisions.scores is not None:  # the CV of the nested decisions
        result.scores, pooled, result.decisions = decisions.scores, decisions.pooled, decisions.describe()
        result.mean, result.std = mean_std(result.scores.values())
    result.oof_score = pooled if pooled == pooled else None  # NaN (one class in every fold run) is no JSON
    D.write_decisions(state.paths, decisions)
    tests = [state.paths.fold_test(k) for k in all_folds]
    if all(p.exists() for p in tests) and tests:
        result.submission_path = write_test_outputs([P.read_csv(p) for p in tests], config, inputs,
                                                    state.paths.submission, state.paths.test_predictions,
                                                    None if decisions is None else decisions.params)
    state.set_cv(CVSummary(metric=monitor, mean=result.mean, std=result.std, oof=result.oof_score,
                           folds=list(all_folds), last_mean=result.last_mean, left_out=result.left_out,
                           decisions=result.decisions,
                           thresholds=None if decisions is None else state.paths.thresholds.name))
    result.report_path = write_report(state.run_dir)
    return result


def predict_test(config: Config, run_dir: Optional[os.PathLike] = None, out: Optional[os.PathLike] = None) -> Path:
    """Re-predict the test split with every finished fold's best checkpoint (predict.* may differ from the run's)."""
    inputs = load_inputs(config)
    D.check_sample(config, inputs.task, P.fold_ids(inputs.manifest, "test"))  # refused before predicting
    inputs, state = open_run(config, run_dir, allow_changed=("predict.",), reopen_lost=False, inputs=inputs)
    done = state.done_folds()
    if not done:
        raise KitError(f"{state.run_dir}: no finished fold; run `kitpkg cv` first")
    for k, record in state.folds().items():  # every fold's weights before any prediction: never a partial average
        if record.status == LOST:
            raise KitError(f"fold {k}: {record.reason or 'it must be trained again'}; "
                           f"{retrain_advice(state.run_dir, k)}")
    for k in done:
        _fold_weights(state.run_dir, k)
    if not inputs.manifest.select("test"):
        raise KitError(f"data.shards: {inputs.manifest.root} has no test split")
    parts = []
    recipes = {k: build_recipe(config, inputs, k) for k in done}
    trainer = build_trainer(recipes[done[0]])
    for k in done:
        dm, meta = fold_parts(recipes[k], inputs, state.run_dir, is_rank_zero())
        module = make_module(recipes[k], load_pretrained=False, meta=meta)
        reload_best(module, state.run_dir, k)
        frame = P.predict_frame(trainer, module, dm.test_dataloader(), state.paths.parts(k), "test",
                                P.fold_ids(inputs.manifest, "test"))
        parts.append(frame)
    if not is_rank_zero():
        return Path(out or state.paths.submission)
    path = Path(out) if out else state.paths.submission
    predictions = path.with_name(path.stem + "_predictions.csv") if out else state.paths.test_predictions
    thresholds = D.thresholds_for_test(inputs.task, state.paths, D.sample_of(config))  # the run's thresholds.json
    return write_test_outputs(parts, config, inputs, path, predictions, thresholds)


def write_test_outputs(parts: Sequence[Any], config: Config, inputs: RunInputs, submission: Path, predictions: Path,
                       thresholds: Any = None) -> Path:
    """Average the folds' test scores; write the full predictions and the competition's submission file (decided
    with `thresholds`, fitted on all OOF, where the task decides labels by thresholds: decisions.py)."""
    test = P.average_test(parts, inputs.task, config.predict.average)
    frame = D.submission_of(inputs.task, test, config, thresholds)  # a refusal leaves both files unwritten
    P.write_csv(test, predictions)
    P.write_csv(frame, submission)
    return submission
