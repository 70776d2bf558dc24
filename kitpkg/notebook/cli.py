"""CLI subcommands of kitpkg.notebook (argument parsing only; the work is one call into the library)."""
from __future__ import annotations

import argparse

from .wheelhouse import KAGGLE_PYTHON  # standard library only: `kitpkg --help` stays fast


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the `kitpkg` parser."""
    p = sub.add_parser("fetch", help="download a file or folder from Google Drive (gdown; retries, resumes)",
                       description="Download a Google Drive file or folder (share link or id) or any URL into DEST. "
                                   "Re-running resumes partial files and skips finished ones.")
    p.add_argument("source", metavar="URL_OR_ID", help="Drive share link, file/folder id, or an http(s) URL")
    p.add_argument("dest", metavar="DEST", help="output file, or folder (for folders and names taken from Drive)")
    p.add_argument("--folder", action="store_true", default=None,
                   help="treat a bare id as a folder (links with /folders/ are detected)")
    p.add_argument("--retries", type=int, default=3, help="extra attempts on network errors, with backoff (3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("wheelhouse", help="build an offline-install Kaggle dataset: kit wheel + missing deps",
                       description="Write the kit's wheel, wheels of its dependencies that Kaggle's image lacks "
                                   "(never torch/torchvision), install.sh and dataset-metadata.json into OUT, "
                                   "ready for `kaggle datasets create -p OUT`.")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--slug", default="kitpkg-wheels", help="Kaggle dataset slug (kitpkg-wheels)")
    p.add_argument("--user", help="Kaggle user name (default: $KAGGLE_USERNAME or ~/.kaggle/kaggle.json)")
    p.add_argument("--title", help="dataset title (6-50 characters)")
    p.add_argument("--no-deps", dest="deps", action="store_false", help="only the kit's own wheel")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="a dependency not to ship (repeatable), e.g. one your image already has")
    p.add_argument("--keep-preinstalled", action="store_true",
                   help="also ship dependencies known to be on Kaggle's image (numpy, pandas, ...)")
    p.add_argument("--python-version", default=KAGGLE_PYTHON,
                   help=f"Python the wheels are for (default: {KAGGLE_PYTHON}, Kaggle's), e.g. 3.13 for Colab")
    p.add_argument("--platform", dest="platforms", action="append", default=[], metavar="TAG",
                   help="a platform tag the wheels may have (repeatable; default: Kaggle's, manylinux_2_28 down to "
                        "manylinux2014/manylinux1 x86_64)")
    p.set_defaults(func=_wheelhouse)

    p = sub.add_parser("dataset-meta", help="write dataset-metadata.json so a folder uploads as a Kaggle dataset",
                       description="Write FOLDER/dataset-metadata.json (shards from `kitpkg convert`, weights from "
                                   "`kitpkg weights`) for `kaggle datasets create -p FOLDER`.")
    p.add_argument("folder", metavar="FOLDER", help="the folder to upload")
    p.add_argument("--slug", required=True, help="Kaggle dataset slug (lower-case letters, digits, dashes)")
    p.add_argument("--user", help="Kaggle user name (default: $KAGGLE_USERNAME or ~/.kaggle/kaggle.json)")
    p.add_argument("--title", help="dataset title (6-50 characters; default: the slug)")
    p.set_defaults(func=_dataset_meta)

    p = sub.add_parser("weights", help="save timm pretrained weights to a folder for offline use",
                       description="Download a timm model's pretrained weights (needs internet) and save them as "
                                   "OUT/<model>.safetensors with a dataset-metadata.json, for a Kaggle dataset.")
    p.add_argument("model", metavar="MODEL", help="timm model name, e.g. efficientnet_b0")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--slug", help="Kaggle dataset slug (default: <model>-weights)")
    p.add_argument("--user", help="Kaggle user name (default: $KAGGLE_USERNAME or ~/.kaggle/kaggle.json)")
    p.set_defaults(func=_weights)


def _fetch(args: argparse.Namespace) -> int:
    from .fetch import fetch

    paths = fetch(args.source, args.dest, folder=args.folder, retries=args.retries, quiet=args.quiet)
    print(f"kitpkg fetch: {len(paths)} file(s) in {args.dest}")
    return 0


def _wheelhouse(args: argparse.Namespace) -> int:
    from .wheelhouse import build_wheelhouse

    build_wheelhouse(args.out, slug=args.slug, user=args.user, title=args.title, deps=args.deps,
                     exclude=args.exclude, keep_preinstalled=args.keep_preinstalled,
                     python_version=args.python_version, platforms=args.platforms)
    return 0


def _dataset_meta(args: argparse.Namespace) -> int:
    from .wheelhouse import write_dataset_metadata

    print(write_dataset_metadata(args.folder, args.slug, user=args.user, title=args.title))
    return 0


def _weights(args: argparse.Namespace) -> int:
    import re

    from .wheelhouse import export_timm_weights, write_dataset_metadata

    path = export_timm_weights(args.model, args.out)
    slug = args.slug or re.sub(r"[^a-z0-9-]+", "-", f"{args.model.lower()}-weights").strip("-")[:50]
    write_dataset_metadata(args.out, slug, user=args.user, title=f"{args.model} weights")
    print(path)
    return 0
