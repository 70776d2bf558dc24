"""CLI subcommands of kitpkg.shards (argument parsing only; the work is one call into the library)."""
from __future__ import annotations

import argparse
import sys

from .formats import FORMATS, WRITTEN_EXTENSIONS
from .options import ASPECTS, ConvertOptions

_DEFAULTS = ConvertOptions()


def _sizes(text: str):
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes comma-separated integers such as 256,384,512, not {text!r}") \
            from None


def _convert(args) -> int:
    from .convert import convert, summarize

    options = ConvertOptions(fmt=args.format, sizes=args.size, aspect=args.aspect, quality=args.quality,
                             id_col=args.id_col, label_col=args.label_col, group_col=args.group_col, folds=args.folds,
                             fold_col=args.fold_col, test_csv=args.test_csv, shard_samples=args.shard_samples,
                             workers=args.workers, seed=args.seed, progress=not args.no_progress,
                             overwrite=args.overwrite)
    manifests = convert(args.source, args.csv, args.out, options)
    for size, manifest in manifests.items():
        print(f"{args.out}/{size}/manifest.json\n{summarize(manifest)}")
    return 0


def _verify(args) -> int:
    from .manifest import load_manifest, manifest_paths
    from .verify import verify

    status = 0
    for folder in (path for given in args.dirs for path in manifest_paths(given)):
        manifest = load_manifest(folder)
        problems = verify(manifest, deep=not args.quick)
        for problem in problems:
            print(f"DAMAGED {problem}", file=sys.stderr)
        if problems:
            status = 1
        else:
            print(f"OK {folder}: {len(manifest.shards)} shards, "
                  f"{sum(s.samples for s in manifest.shards)} samples match the manifest")
    return status


def _index(args) -> int:
    from .convert import summarize
    from .index import index

    manifest = index(args.paths, args.out, id_col=args.id_col, label_col=args.label_col or None, folds=args.folds)
    print(f"{manifest.root}/manifest.json\n{summarize(manifest)}")
    return 0


def _demo_data(args) -> int:
    from .demo_data import make_demo_data

    paths = make_demo_data(args.out, n_patients=args.patients, images_per_patient=args.images_per_patient,
                           n_test=args.test_images, width=args.width, height=args.height, seed=args.seed,
                           overwrite=args.overwrite)
    print(f"images: {paths.images}\ntrain:  {paths.train_csv}\ntest:   {paths.test_csv}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `kitpkg` parser."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("convert", formatter_class=fmt, help="images + CSV → resized shards + manifest (per size)",
                       description="Convert a folder or .zip of images plus a CSV into a few large shards "
                       "(TFRecord or WebDataset tar) with a manifest.json, one shard set per --size under OUT/<size>/. "
                       "Each train shard holds one fold. Re-running the same command resumes an interrupted run.")
    p.add_argument("source", help="folder of images (nested folders OK) or a .zip (read in place, never extracted)")
    p.add_argument("csv", help="train CSV: one row per image, with the id column (and label/group columns)")
    p.add_argument("out", help="output folder; shards go to OUT/<size>/")
    p.add_argument("--format", default=_DEFAULTS.fmt, choices=list(FORMATS),
                   help="; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
    p.add_argument("--size", type=_sizes, default=_DEFAULTS.sizes, metavar="N[,N…]",
                   help="output image side(s) in px; several (256,384,512) are made from one decode")
    p.add_argument("--aspect", default=_DEFAULTS.aspect, choices=ASPECTS,
                   help="crop: resize the shorter side to N and keep the centre square; pad: fit the longer side "
                        "and pad with black; squash: stretch to N×N")
    p.add_argument("--quality", type=int, default=_DEFAULTS.quality,
                   help="JPEG quality of the re-encoded images (1-100)")
    p.add_argument("--id-col", default=_DEFAULTS.id_col,
                   help="CSV column naming each image file (with or without .jpg)")
    p.add_argument("--label-col", default=_DEFAULTS.label_col,
                   help="CSV label column (classes or a float target), or several comma-separated (a,b,c: 0/1 labels "
                        "or floats, e.g. multilabel, regression, soft labels); '' for unlabeled data")
    p.add_argument("--group-col", default=_DEFAULTS.group_col,
                   help="images with the same value stay in one fold; '' to fold by image")
    p.add_argument("--folds", type=int, default=_DEFAULTS.folds,
                   help="number of stratified, grouped folds (0: no folds)")
    p.add_argument("--fold-col", default=_DEFAULTS.fold_col, help="a CSV column with this name already assigns the "
                   "folds (used as given, --folds ignored); otherwise the assigned fold is stored under this name")
    p.add_argument("--test-csv", default=_DEFAULTS.test_csv, help="test CSV (no label needed): written as test shards")
    p.add_argument("--shard-samples", type=int, default=_DEFAULTS.shard_samples,
                   help="at most this many images per shard")
    p.add_argument("--workers", type=int, default=_DEFAULTS.workers,
                   help="processes for decoding/encoding (default: all cores)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                   help="seed of the fold assignment and the order within folds")
    p.add_argument("--overwrite", action="store_true",
                   help="replace shards in OUT made from other inputs or options (otherwise refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also: KITPKG_NO_PROGRESS=1)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("verify", formatter_class=fmt, help="check shards against their manifest",
                       description="Check every shard of each manifest: size, sha256, per-sample checksums, record "
                       "CRCs, sample counts, ids and offsets. Exits 1 naming the shard and offset of any damage.")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="folder holding manifest.json (or the manifest's path), or convert's OUT: every size in it")
    p.add_argument("--quick", action="store_true", help="only sizes and checksums; do not parse the records")
    p.set_defaults(func=_verify)

    p = sub.add_parser("index", formatter_class=fmt, help="write a manifest for shards made elsewhere",
                       description="Scan TFRecords (from tf.io.TFRecordWriter, plain or GZIP) or webdataset tars and "
                       "write a manifest.json so they load without re-conversion. Folds come from names like "
                       "train07-2071.tfrec (fold 7).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="shard files, or folders searched for "
                   f"{'/'.join(WRITTEN_EXTENSIONS)} files")
    p.add_argument("--out", default=None,
                   help="folder for manifest.json (default: the shards' common folder; needed if that is read-only)")
    p.add_argument("--id-col", default=_DEFAULTS.id_col, help="feature (TFRecord) or JSON field (tar) holding the id")
    p.add_argument("--label-col", default=None, help="feature or JSON field holding the label (e.g. target, cls), "
                   "or several comma-separated ones holding numbers (a,b,c)")
    p.add_argument("--folds", type=int, default=None, help="K: fold = number in the file name mod K")
    p.set_defaults(func=_index)

    p = sub.add_parser("demo-data", formatter_class=fmt, help="write the synthetic lesion demo dataset",
                       description="Write a synthetic, learnable ISIC-like dataset (JPEGs + train.csv + test.csv); "
                       "no download, deterministic from --seed.")
    p.add_argument("out", help="output folder")
    p.add_argument("--patients", type=int, default=120, help="number of patients (several images each)")
    p.add_argument("--images-per-patient", type=int, default=4, help="train images per patient")
    p.add_argument("--test-images", type=int, default=60, help="number of test images")
    p.add_argument("--width", type=int, default=768, help="image width in px")
    p.add_argument("--height", type=int, default=512, help="image height in px")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace a train.csv/test.csv already in OUT")
    p.set_defaults(func=_demo_data)
