"""CLI subcommands of kitpkg.train (argument parsing only; the work is one call into the library)."""
from __future__ import annotations

import argparse

from ..rundir import FOLD_TEST, RunDir


def _common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("--config", required=config_required, help="experiment YAML (one file = one experiment)")
    p.add_argument("--run-dir", default=None, help="run directory (default: output.run_dir of the config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=2 (repeatable)")


def _load(args: argparse.Namespace):
    from ..config import load_config

    return load_config(args.config, overrides=args.overrides)


def _folds(text: str):
    return [int(x) for x in text.split(",") if x.strip()]


def _cv(args: argparse.Namespace) -> int:
    from .cv import run_cv

    config = _load(args)
    prepare = getattr(args, "prepare_run", None)  # set by kitpkg/cli.py: the notebook area's step, not imported here
    if prepare is not None:
        prepare(config, args.run_dir)
    if getattr(args, "parallel_folds", 1) != 1:
        from .parallel import run_parallel_cv

        result = run_parallel_cv(config, args.parallel_folds, args.run_dir, folds=args.folds)
    else:
        result = run_cv(config, args.run_dir, folds=args.folds, train_only=getattr(args, "train_only", False))
    from .runstate import is_rank_zero

    if result.paused and result.resume_hint:  # exit 0 all the same: a Kaggle Save Version keeps its output
        from .budget import continue_hint

        result.resume_hint = continue_hint(_again(args))
    if is_rank_zero() and not getattr(args, "train_only", False):  # a worker's parent prints the run's summary
        print(result.summary())
    return 0


def _again(args: argparse.Namespace) -> str:
    """The command that continues a paused `kitpkg cv`/`train`: the same config, run directory, overrides, folds."""
    import shlex

    words = ["kitpkg", "cv", "--config", args.config, *(["--run-dir", args.run_dir] if args.run_dir else [])]
    words += [w for item in args.overrides for w in ("--set", item)]
    if args.folds is not None:
        words += ["--folds", ",".join(map(str, args.folds))]
    if getattr(args, "parallel_folds", 1) != 1:
        words += ["--parallel-folds", str(args.parallel_folds)]
    return shlex.join(words)


def _merge(args: argparse.Namespace) -> int:
    import sys

    from .merge import merge_runs

    result, conflicts = merge_runs(_load(args), args.dirs, args.into)
    for line in conflicts:
        print(f"kitpkg merge: {line}", file=sys.stderr)
    print(result.summary())
    return 0


def _train(args: argparse.Namespace) -> int:
    args.folds = [args.fold]
    return _cv(args)


def _predict(args: argparse.Namespace) -> int:
    from .cv import predict_test

    config = _load(args)
    if args.tta is not None:
        config.predict.tta = [v for v in args.tta.split(",") if v]
        from ..config import validate

        validate(config)
    path = predict_test(config, args.run_dir, args.out)
    print(f"submission: {path}")
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from .lr_find import run_lr_find

    result = run_lr_find(_load(args), args.run_dir, fold=args.fold, write_config=args.write_config,
                         min_lr=args.min_lr, max_lr=args.max_lr, num_training=args.steps)
    print(f"suggested lr: {result['suggestion']}\nplot: {result['plot']}")
    if args.write_config:
        print(f"optim.lr written into {args.config}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .plan import run_plan

    plan = run_plan(_load(args), args.run_dir, sizes=args.sizes, steps=args.steps)
    print(plan.summary())
    return 0


def _augment_preview(args: argparse.Namespace) -> int:
    from .preview import write_preview
    from .runstate import run_directory

    config = _load(args)
    out = args.out or RunDir(run_directory(args.run_dir or config.output.run_dir)).figure("augment_preview")
    print(f"augment preview: {write_preview(config, out, n=args.n, fold=args.fold)}")
    return 0


def _pseudo(args: argparse.Namespace) -> int:
    from .pseudo import make_pseudo_labels

    sets = make_pseudo_labels(args.out, run_dir=args.run, predictions=args.predictions, shards=args.shards,
                              high=args.threshold, low=args.low, soft=args.soft)
    for fold, manifest in sorted(sets.items(), key=lambda item: -1 if item[0] is None else item[0]):
        if args.soft:
            counts = f"soft targets: {', '.join(manifest.label_columns())}"
        else:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(manifest.class_counts.items()))
        where = manifest.root if fold is None else f"{manifest.root} (labelled by fold {fold}'s model)"
        print(f"pseudo-labels: {manifest.num_samples('train')} samples ({counts}) in {where}")
    trains = "every fold trains on it" if None in sets else "fold k trains only on the set fold k's model labelled"
    print(f"add {args.out} to data.extra_train of a later config (training only: {trains})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `kitpkg` parser."""
    p = sub.add_parser("cv", help="K-fold cross-validation: train every fold, OOF, CV score, submission, report",
                       description="Train every fold not yet finished (resuming a crashed one mid-epoch), then write "
                                   "oof.csv, submission.csv and report.md into the run directory.")
    _common(p)
    p.add_argument("--folds", type=_folds, default=None, help="comma-separated folds to train now (default: all)")
    p.add_argument("--parallel-folds", type=int, default=1, metavar="N",
                   help="train N folds at once, in N processes (one GPU each; on the CPU they share the cores)")
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)  # a --parallel-folds worker
    p.set_defaults(func=_cv)

    p = sub.add_parser("merge", help="put together run directories of one config trained elsewhere; finish the run",
                       description="Copy the finished folds of run directories (same config, same shards, trained on "
                                   "other machines) into one and write oof.csv, submission.csv and report.md, "
                                   "retraining nothing. A fold finished in two of them with different results is "
                                   "reported and the target's kept.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories of `kitpkg cv` for this config")
    p.add_argument("--config", required=True, help="the experiment YAML the runs were trained with")
    p.add_argument("--into", default=None, help="the run directory to merge into (default: the first DIR)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, as given to `kitpkg cv`")
    p.set_defaults(func=_merge)

    p = sub.add_parser("train", help="train one fold of a config (same run directory as `kitpkg cv`)")
    _common(p)
    p.add_argument("--fold", type=int, required=True, help="the fold to train (validated on)")
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="predict the test split with every finished fold (TTA), write a submission")
    _common(p)
    p.add_argument("--tta", default=None, help="comma-separated TTA views (hflip,vflip,transpose,...), '' for none")
    p.add_argument("--out", default=None, help="submission path (default: RUN_DIR/submission.csv)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("lr-find", help="Lightning's LR finder on fold 0's training data; plot + suggestion")
    _common(p)
    p.add_argument("--fold", type=int, default=0, help="the fold whose training data is used (default 0)")
    p.add_argument("--min-lr", type=float, default=1e-6, help="smallest learning rate tried")
    p.add_argument("--max-lr", type=float, default=1.0, help="largest learning rate tried")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep")
    p.add_argument("--write-config", action="store_true", help="write the suggestion into optim.lr of the YAML")
    p.set_defaults(func=_lr_find)

    p = sub.add_parser("plan", help="time a few training steps here; project fold and CV time, memory, output size",
                       description="Train the first fold for a few dozen steps after a warm-up (nothing but plan.json "
                                   "is written into the run directory), then print train and loader images/s, the "
                                   "loader's wait share, peak memory, the largest batch that fits (GPU), and the "
                                   "projected time per fold and for the CV against the session budget and the output "
                                   "limit; `kitpkg runs` shows the projection beside the actual fold time.")
    _common(p)
    p.add_argument("--sizes", type=_folds, default=None, metavar="384,512",
                   help="image sizes to plan, from those the shard set has (default: data.image_size)")
    p.add_argument("--steps", type=int, default=30, metavar="N", help="training steps timed after the warm-up")
    p.set_defaults(func=_plan)

    p = sub.add_parser("augment-preview", help="a PNG grid of training samples as the model sees them (CPU + GPU "
                                              "augmentation stages)")
    _common(p)
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/augment_preview.png)")
    p.add_argument("--n", type=int, default=16, help="samples shown (default 16)")
    p.add_argument("--fold", type=int, default=None, help="the fold whose training data is shown (default: first)")
    p.set_defaults(func=_augment_preview)

    p = sub.add_parser("pseudo", help="turn confident test predictions into labelled (training-only) shard sets",
                       description="--run: one set per finished fold of the run, labelled by that fold's model alone "
                                   "(OUT/fold{k}); a later run's fold k trains only on fold k's set, so no fold "
                                   "learns from a model that saw its labels. --predictions: one set (OUT) that every "
                                   "fold trains on, for predictions of models that never saw these training labels. "
                                   "Binary and multiclass runs give confident classes (--threshold, --low); "
                                   "multilabel, soft, regression and ordinal runs give every test sample their "
                                   "probabilities or values as float targets (--soft, with --run).")
    p.add_argument("--run", default=None, help=f"a run directory of `kitpkg cv` (its {FOLD_TEST} files and "
                                               "shards are used)")
    p.add_argument("--predictions", default=None, help="a CSV with id and prediction columns (instead of --run)")
    p.add_argument("--shards", default=None, help="the test shards (manifest folder/json; default: the run's)")
    p.add_argument("--threshold", type=float, default=None, help="keep p >= threshold as positive (binary) or "
                                                                   "max class prob >= threshold (multi-class); "
                                                                   "default 0.9")
    p.add_argument("--low", type=float, default=None, help="keep p <= low as negative (default: 1 - threshold)")
    p.add_argument("--soft", action="store_true", help="multilabel, soft, regression and ordinal runs (with --run): "
                                                       "every test sample, its label columns holding the teacher's "
                                                       "probabilities or values as floats")
    p.add_argument("--out", required=True, help="output folder of the pseudo-label shard set(s)")
    p.set_defaults(func=_pseudo)
