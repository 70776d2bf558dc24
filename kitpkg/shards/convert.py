"""`kitpkg convert`: CSV + folder/zip of images → resized JPEG shards (any format of formats.py) + manifest per size.

What to make is one ConvertOptions (options.py). Images are decoded, resized and re-encoded once, in a process pool
(imaging.convert_image in pool.ordered_map, which survives crashing workers); the main process writes the
results in plan order, so the bytes do not depend on the number of workers. Each shard is written under a temp name and
renamed when complete; a state file lets a re-run keep finished shards (resume.py). Bad images never stop the run: they
are listed in the manifest's `rejected` with a reason.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .. import fsutil
from .._version import __version__
from .formats import IMAGE_KEY, shard_format
from .imaging import BadImage, convert_image
from .manifest import Manifest, ShardInfo, class_counts
from .options import ConvertOptions
from .plan import Plan, ShardPlan, make_plan
from .pool import ordered_map
from .resume import ConvertState
from .sources import ImageSource, listing_sha256
from .writer import ShardWriter

_WORKER: Dict[str, Any] = {}  # in each worker process: the source and what to make of every image


def _init_worker(source: ImageSource, sizes: Sequence[int], aspect: str, quality: int, threads: int) -> None:
    import cv2

    cv2.setNumThreads(threads)  # one cv2 thread per worker process: the pool already uses every core
    _WORKER.update(source=source, sizes=list(sizes), aspect=aspect, quality=quality)


def _work(rel: str) -> Tuple[bool, Union[List[bytes], str]]:
    """(True, [jpeg per size]) or (False, reason) for one source file."""
    try:
        data = _WORKER["source"].read(rel)
    except BadImage as err:  # too big to be an image: refused before it is read whole
        return False, str(err)
    except Exception as err:  # unreadable file in a folder or a damaged zip member
        return False, f"unreadable file ({type(err).__name__}: {err})"
    try:
        return True, convert_image(data, _WORKER["sizes"], _WORKER["aspect"], _WORKER["quality"], rel)
    except BadImage as err:
        return False, str(err)


def _killed(rel: str) -> Tuple[bool, str]:
    return False, "the image killed its decoder process (a crash in the image library, or out of memory)"


def _results(rels: List[str], src: ImageSource, options: ConvertOptions, workers: int) -> Iterator[Tuple[bool, Any]]:
    """Worker results in input order (which keeps the output deterministic)."""
    import cv2

    saved = cv2.getNumThreads()  # the caller's setting (a notebook kernel's) is restored when we are done
    initargs = (src, options.sizes, options.aspect, options.quality)
    if workers <= 1 or len(rels) < 8:
        try:
            _init_worker(*initargs, 0)
            yield from map(_work, rels)
        finally:
            cv2.setNumThreads(saved)
            _WORKER.clear()  # drop the source (and its open zip) from this process
        return
    # stop cv2's thread pool first: a forked child inherits the pool without its threads and deadlocks in cv2.resize
    # (albumentations, or an earlier convert in the same kernel, is enough to start it)
    cv2.setNumThreads(1)
    try:  # workers only touch cv2/simplejpeg/PIL, so the pool's fork is safe
        yield from ordered_map(_work, rels, workers, _killed, _init_worker, (*initargs, 1))
    finally:
        cv2.setNumThreads(saved)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS/Windows
        return os.cpu_count() or 1


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    off = not enabled or os.environ.get("KITPKG_NO_PROGRESS") == "1" or total == 0
    return tqdm(total=total, unit="img", desc="convert", disable=off, smoothing=0.1)


def convert(source, csv, out, options: Optional[ConvertOptions] = None, **overrides: Any) -> Dict[int, Manifest]:
    """Convert images + CSV into shards and write OUT/<size>/manifest.json for every size; return {size: Manifest}.

    `options` (a ConvertOptions; default: its defaults) with `overrides` applied by name, e.g.
    ``convert(images, csv, out, fmt="wds", sizes=(256, 384))``. Aspect policies (every output is N×N): `crop`
    (default) scales the shorter side to N and keeps the centre square, as most Kaggle pipelines do; `pad` fits the
    longer side and pads with black; `squash` stretches. Re-running the same call resumes; other options on an
    existing OUT raise KitError unless `overwrite`.
    """
    opts = ConvertOptions.of(options, **overrides)
    fmt = shard_format(opts.fmt)
    src = ImageSource(source)
    files = src.list_images()
    plan = make_plan(files, csv, opts.test_csv, fmt.extension, id_col=opts.id_col, label_cols=opts.label_cols,
                     group_col=opts.group_col, folds=opts.folds, fold_col=opts.fold_col,
                     shard_samples=opts.shard_samples, seed=opts.seed,
                     image_key=IMAGE_KEY if fmt.image_in_row else None)
    inputs = {"csv_sha256": fsutil.sha256_file(csv),
              "test_csv_sha256": fsutil.sha256_file(opts.test_csv) if opts.test_csv else None,
              "source_listing_sha256": listing_sha256(files)}
    sizes = list(opts.sizes)
    with fsutil.disk_full_is_kit_error(out, "re-run the same command: it keeps the complete shards and continues"):
        states = _open_states(out, sizes, {**opts.state(), **inputs}, opts.overwrite)
        pending = []  # (shard, sizes still to write): a shard complete in every size is kept as it is
        for shard in plan.shards:
            todo = [z for z in sizes if not states[z].is_complete(shard.file, [x.id for x in shard.samples])]
            if todo:
                pending.append((shard, todo))
        with contextlib.closing(src):
            _write_shards(plan, pending, states, src, opts)
        manifests = {size: _manifest(plan, states[size], size, opts, inputs) for size in sizes}
        for size, manifest in manifests.items():
            manifest.save(states[size].folder)
            manifest.root = os.path.abspath(states[size].folder)
    print(_one_line(manifests[sizes[0]], sizes, out, len(plan.shards) - len(pending)), file=sys.stderr)
    return manifests


def _open_states(out, sizes: List[int], common: Dict[str, Any], overwrite: bool) -> Dict[int, ConvertState]:
    """The state of every OUT/<size> folder, all opened before any work (a refusal must come first)."""
    fsutil.ensure_folder(out, "OUT folder")
    states = {}
    for size in sizes:
        folder = str(fsutil.ensure_folder(os.path.join(str(out), str(size)), "OUT folder"))
        states[size] = ConvertState.open(folder, {**common, "size": size}, overwrite)
        states[size].clean_temp_files()
    return states


def _write_shards(plan: Plan, pending: List[Tuple[ShardPlan, List[int]]], states: Dict[int, ConvertState],
                  src: ImageSource, opts: ConvertOptions) -> None:
    rels = [sample.file for shard, _ in pending for sample in shard.samples]
    results = _results(rels, src, opts, int(opts.workers) if opts.workers else _default_workers())
    classes = plan.classes if opts.label_col else None
    with _progress(len(rels), opts.progress) as bar, contextlib.closing(results):
        for shard, todo in pending:
            with contextlib.ExitStack() as stack:
                outs = {z: ShardWriter(stack.enter_context(fsutil.atomic_write(os.path.join(states[z].folder,
                                                                                            shard.file))),
                                       opts.fmt, plan.schema, classes=classes) for z in todo}
                rejected = []
                for sample in shard.samples:
                    ok, payload = next(results)
                    bar.update(1)
                    if not ok:
                        rejected.append({"id": sample.id, "file": sample.file, "reason": payload})
                        continue
                    for z in todo:
                        outs[z].add(sample.key, sample.id, payload[opts.sizes.index(z)], sample.row, sample.label)
                keep_labels = bool(opts.label_col) and shard.split == "train"
                infos = {z: o.finish(shard.file, shard.split, shard.fold, keep_labels) for z, o in outs.items()}
            # the files are complete under their final names now; only then does the state say so
            for z in todo:
                states[z].record(infos[z], rejected, [x.id for x in shard.samples])


def _manifest(plan: Plan, state: ConvertState, size: int, opts: ConvertOptions, inputs: Dict[str, Any]) -> Manifest:
    shards = [state.shard(s.file) for s in plan.shards]
    rejected = list(plan.rejected) + [r for s in plan.shards for r in state.rejected(s.file)]
    cols = [c for c in opts.label_cols if c in plan.schema]
    options = {**opts.manifest_options(), "test_csv_sha256": inputs["test_csv_sha256"]}
    if plan.classes and not all(isinstance(c, int) for c in plan.classes):
        options["classes"] = plan.classes  # a stored class index (e.g. a tar's KEY.cls) indexes this list
    return Manifest(format=opts.fmt, schema=dict(plan.schema), shards=shards, id_col=opts.id_col,
                    label_col=cols[0] if len(cols) == 1 else None, label_cols=cols if len(cols) > 1 else None,
                    group_col=opts.group_col, image_size=size,
                    aspect=opts.aspect, num_folds=plan.num_folds, class_counts=class_counts(shards, cols),
                    source_csv_sha256=inputs["csv_sha256"], rejected=rejected, options=options,
                    kitpkg_version=__version__)


def _fold_labels(shards: List[ShardInfo], cols: List[str]) -> str:
    """A fold's labels in a few words: class counts, positives per label column, or each float column's mean."""
    counts = class_counts(shards, cols)
    if counts is not None:
        return f"  {'positives' if len(cols) > 1 else 'classes'} {counts}" if counts else ""
    rows = [v if len(cols) > 1 else [v] for shard in shards for v in shard.labels or ()]
    columns = [[x for x in column if isinstance(x, (int, float))] for column in zip(*rows)]  # a foreign gap: None
    return "  mean " + " ".join(f"{c}={sum(x) / len(x):.4g}" for c, x in zip(cols, columns) if x) if rows else ""


def _one_line(manifest: Manifest, sizes: List[int], out, kept: int) -> str:
    n_train, n_test = manifest.num_samples("train"), manifest.num_samples("test")
    reasons = Counter(r["reason"].split(" (")[0].split(":")[0] for r in manifest.rejected)
    why = "; ".join(f"{n} {reason}" for reason, n in reasons.most_common(4))
    resumed = f", {kept} kept from an earlier run" if kept else ""
    return (f"kitpkg convert: {n_train} train + {n_test} test images → {len(manifest.shards)} {manifest.format} shards "
            f"per size ({', '.join(map(str, sizes))} px) in {out}{resumed}; {len(manifest.rejected)} rejected"
            + (f" ({why}; see 'rejected' in manifest.json)" if manifest.rejected else ""))


def summarize(manifest: Manifest) -> str:
    """A short human summary: shards, samples per fold, class counts and rejected files."""
    lines = [f"{manifest.format} shards at {manifest.image_size or '?'} px ({manifest.aspect or 'as stored'}): "
             f"{len(manifest.shards)} files, {sum(s.bytes for s in manifest.shards) / 1e6:.1f} MB"]
    cols = manifest.label_columns()
    for fold in manifest.folds():
        shards = manifest.select("train", [fold])
        extra = _fold_labels(shards, cols)
        lines.append(f"  fold {fold}: {sum(s.samples for s in shards):6d} samples in {len(shards)} shards{extra}")
    unfolded = [s for s in manifest.select("train") if s.fold is None]
    if unfolded:
        lines.append(f"  train (no folds): {sum(s.samples for s in unfolded)} samples in {len(unfolded)} shards")
    if manifest.select("test"):
        lines.append(f"  test: {manifest.num_samples('test')} samples in {len(manifest.select('test'))} shards")
    if manifest.class_counts and len(cols) > 1:
        lines.append(f"  positives per label column: {manifest.class_counts}")
    elif manifest.class_counts:
        lines.append(f"  class counts ({manifest.label_col}): {manifest.class_counts}")
    elif manifest.class_counts is None:
        lines.append(f"  label column{'s' if len(cols) > 1 else ''} {', '.join(cols)}: numbers, not classes")
    lines.append(f"  rejected: {len(manifest.rejected)}"
                 + "".join(f"\n    {r['id'] or r['file']}: {r['reason']}" for r in manifest.rejected[:5])
                 + ("\n    …" if len(manifest.rejected) > 5 else ""))
    return "\n".join(lines)
