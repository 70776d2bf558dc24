"""`kitpkg convert`: CSV + folder/zip of images → resized JPEG shards (TFRecord or WebDataset tar) + manifest per size.

Images are decoded, resized and re-encoded once, in a process pool (imaging.convert_image); the main process writes the
results in plan order, so the bytes do not depend on the number of workers. Each shard is written under a temp name and
renamed when complete; a state file lets a re-run keep finished shards (resume.py). Bad images never stop the run: they
are listed in the manifest's `rejected` with a reason.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .. import fsutil
from .._version import __version__
from ..errors import KitError
from .imaging import ASPECTS, BadImage, convert_image
from .manifest import FORMATS, Manifest, label_counts
from .plan import Plan, ShardPlan, make_plan
from .resume import ConvertState
from .sources import ImageSource, listing_sha256
from .writer import ShardWriter

EXTENSIONS = {"tfrecord": ".tfrec", "wds": ".tar"}
DEFAULT_SHARD_SAMPLES = 1024
_WORKER: Dict[str, Any] = {}


def _init_worker(source: ImageSource, sizes: Sequence[int], aspect: str, quality: int, threads: int) -> None:
    import cv2

    cv2.setNumThreads(threads)  # one cv2 thread per worker process: the pool already uses every core
    _WORKER.update(source=source, sizes=list(sizes), aspect=aspect, quality=quality)


def _init_pool_worker(parent: int, *initargs: Any) -> None:
    _die_with_parent(parent)
    _init_worker(*initargs)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the converting process dies (a SIGKILL, a crashed notebook
    kernel); an orphaned pool worker would otherwise wait for work forever."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux/glibc
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


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


def _results(rels: List[str], workers: int, source: ImageSource, sizes, aspect, quality) -> Iterator[Tuple[bool, Any]]:
    """Worker results in input order (which keeps the output deterministic)."""
    import cv2

    saved = cv2.getNumThreads()  # the caller's setting (a notebook kernel's) is restored when we are done
    if workers <= 1 or len(rels) < 8:
        try:
            _init_worker(source, sizes, aspect, quality, 0)
            yield from map(_work, rels)
        finally:
            cv2.setNumThreads(saved)
            _WORKER.clear()  # drop the source (and its open zip) from this process
        return
    # fork where there is one, as torch's DataLoader does: spawn/forkserver re-import the caller's __main__, which
    # breaks plain scripts without an `if __name__ == "__main__":` guard; workers only touch cv2/simplejpeg/PIL
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    # stop cv2's thread pool first: a forked child inherits the pool without its threads and deadlocks in cv2.resize
    # (measured: albumentations or an earlier convert in the same kernel is enough to start it)
    cv2.setNumThreads(1)
    try:
        yield from _pooled(rels, workers, ctx, (os.getpid(), source, sizes, aspect, quality, 1))
    finally:
        cv2.setNumThreads(saved)


_DEATHS_IN_A_ROW = 3  # images that each killed their own process, one after another: blame the machine, not them


def _pooled(rels: List[str], workers: int, ctx: Any, initargs: tuple) -> Iterator[Tuple[bool, Any]]:
    """`_work` over `rels` in a process pool, in order, with a bounded window of tasks in flight. A worker that dies
    (a decoder crash, the OOM killer) costs only the image that killed it: the next unfinished image is retried
    alone, rejected if it kills its process too, and the pool restarts after it. (multiprocessing.Pool would wait
    forever for a dead worker's result.)"""
    chunksize = max(1, min(16, len(rels) // (workers * 8)))
    done, deaths = 0, 0
    while done < len(rels):
        pool = _pool(workers, ctx, initargs)
        broken = False
        try:
            for results in _in_order(pool, rels, done, chunksize, window=4 * workers):
                for result in results:
                    yield result
                    done += 1
                deaths = 0
        except BrokenProcessPool:
            broken = True
        finally:
            # a broken pool has failed every future itself: cancelling them too races its manager thread, which then
            # never stops the other workers (CPython gh-107219, Python <= 3.11) and the process cannot exit
            pool.shutdown(wait=True, cancel_futures=not broken)
        if broken:
            ok, payload = _alone(rels[done], ctx, initargs)
            deaths = 0 if ok else deaths + 1
            if deaths >= _DEATHS_IN_A_ROW:
                raise KitError(f"{deaths} images in a row each killed their worker process (last: {rels[done]}); "
                               "that is the machine (out of memory? a broken install?), not the images: fix it and "
                               "re-run the same command, which continues where this run stopped")
            yield ok, payload
            done += 1
            chunksize = 1  # a chunk fails as a whole: one image per task from now on finds the culprit quickly


def _pool(workers: int, ctx: Any, initargs: tuple) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=initargs)


def _in_order(pool: ProcessPoolExecutor, rels: List[str], start: int, chunksize: int,
              window: int) -> Iterator[List[Tuple[bool, Any]]]:
    """Results of `rels[start:]` chunk by chunk, in order, with at most `window` chunks submitted ahead
    (Executor.map would submit every chunk at once: a future per image after a crash)."""
    pending: "deque[Future]" = deque()
    nxt = start
    while pending or nxt < len(rels):
        while nxt < len(rels) and len(pending) < window:
            pending.append(pool.submit(_work_chunk, rels[nxt:nxt + chunksize]))
            nxt += chunksize
        yield pending.popleft().result()


def _work_chunk(rels: List[str]) -> List[Tuple[bool, Any]]:
    return [_work(rel) for rel in rels]


def _alone(rel: str, ctx: Any, initargs: tuple) -> Tuple[bool, Any]:
    """`_work(rel)` in a process of its own; a rejection when that process dies."""
    pool = _pool(1, ctx, initargs)
    try:
        return pool.submit(_work, rel).result()
    except BrokenProcessPool:
        return False, "the image killed its decoder process (a crash in the image library, or out of memory)"
    finally:
        pool.shutdown(wait=True)


def _shard_writer(f: IO[bytes], fmt: str, plan: Plan, label_col: Optional[str]) -> ShardWriter:
    return ShardWriter(f, fmt, plan.schema, classes=plan.classes if label_col else None)


def _check_options(fmt: str, sizes: Sequence[int], aspect: str, quality: int, shard_samples: int) -> List[int]:
    if fmt not in FORMATS:
        raise KitError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if aspect not in ASPECTS:
        raise KitError(f"--aspect must be one of {', '.join(ASPECTS)}, not {aspect!r}")
    if not 1 <= int(quality) <= 100:
        raise KitError(f"--quality must be 1…100, not {quality}")
    if int(shard_samples) < 1:
        raise KitError(f"--shard-samples must be ≥ 1, not {shard_samples}")
    sizes = [int(s) for s in sizes]
    if not sizes or any(s < 8 for s in sizes) or len(set(sizes)) != len(sizes):
        raise KitError(f"--size needs distinct image sides ≥ 8 px, not {sizes}")
    return sizes


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS/Windows
        return os.cpu_count() or 1


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    off = not enabled or os.environ.get("KITPKG_NO_PROGRESS") == "1" or total == 0
    return tqdm(total=total, unit="img", desc="convert", disable=off, smoothing=0.1)


def convert(source, csv, out, *, fmt: str = "tfrecord", sizes: Sequence[int] = (384,), id_col: str = "image_name",
            label_col: Optional[str] = "target", group_col: Optional[str] = "patient_id", folds: Optional[int] = 5,
            fold_col: str = "fold", test_csv=None, aspect: str = "crop", quality: int = 90,
            shard_samples: int = DEFAULT_SHARD_SAMPLES, workers: Optional[int] = None, seed: int = 42,
            progress: bool = True, overwrite: bool = False) -> Dict[int, Manifest]:
    """Convert images + CSV into shards and write OUT/<size>/manifest.json for every size; return {size: Manifest}.

    Aspect policies (every output is N×N): `crop` (default) scales the shorter side to N and keeps the centre square,
    as most Kaggle pipelines do; `pad` fits the longer side and pads with black; `squash` stretches. Re-running the
    same call resumes; other options on an existing OUT raise KitError unless `overwrite`.
    """
    sizes = _check_options(fmt, sizes, aspect, quality, shard_samples)
    src = ImageSource(source)
    files = src.list_images()
    plan = make_plan(files, csv, test_csv, EXTENSIONS[fmt], id_col=id_col, label_col=label_col or None,
                     group_col=group_col or None, folds=folds, fold_col=fold_col, shard_samples=int(shard_samples),
                     seed=seed, image_key="image" if fmt == "tfrecord" else None)
    common = {"format": fmt, "aspect": aspect, "quality": int(quality), "shard_samples": int(shard_samples),
              "seed": seed, "id_col": id_col, "label_col": label_col or None, "group_col": group_col or None,
              "folds": folds, "fold_col": fold_col, "csv_sha256": fsutil.sha256_file(csv),
              "test_csv_sha256": fsutil.sha256_file(test_csv) if test_csv else None,
              "source_listing_sha256": listing_sha256(files)}
    n_workers = int(workers) if workers else _default_workers()
    with fsutil.disk_full_is_kit_error(out, "re-run the same command: it keeps the complete shards and continues"):
        states = _open_states(out, sizes, common, overwrite)
        pending = []  # (shard, sizes still to write): a shard complete in every size is kept as it is
        for shard in plan.shards:
            todo = [z for z in sizes if not states[z].is_complete(shard.file, [x.id for x in shard.samples])]
            if todo:
                pending.append((shard, todo))
        with contextlib.closing(src):
            _write_shards(plan, pending, states, sizes, src, fmt, aspect, int(quality), n_workers, progress,
                          label_col)
        manifests = {size: _manifest(plan, states[size], fmt, size, aspect, label_col, group_col, id_col, common)
                     for size in sizes}
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
                  sizes: List[int], src: ImageSource, fmt: str, aspect: str, quality: int, workers: int, progress: bool,
                  label_col: Optional[str]) -> None:
    rels = [sample.file for shard, _ in pending for sample in shard.samples]
    results = _results(rels, workers, src, sizes, aspect, quality)
    with _progress(len(rels), progress) as bar, contextlib.closing(results):
        for shard, todo in pending:
            with contextlib.ExitStack() as stack:
                outs = {z: _shard_writer(stack.enter_context(fsutil.atomic_write(os.path.join(states[z].folder,
                                                                                              shard.file))),
                                         fmt, plan, label_col) for z in todo}
                rejected = []
                for sample in shard.samples:
                    ok, payload = next(results)
                    bar.update(1)
                    if not ok:
                        rejected.append({"id": sample.id, "file": sample.file, "reason": payload})
                        continue
                    for z in todo:
                        outs[z].add(sample.key, sample.id, payload[sizes.index(z)], sample.row, sample.label)
                keep_labels = bool(label_col) and shard.split == "train"
                infos = {z: o.finish(shard.file, shard.split, shard.fold, keep_labels) for z, o in outs.items()}
            # the files are complete under their final names now; only then does the state say so
            for z in todo:
                states[z].record(infos[z], rejected, [x.id for x in shard.samples])


def _manifest(plan: Plan, state: ConvertState, fmt: str, size: int, aspect: str, label_col: Optional[str],
              group_col: Optional[str], id_col: str, common: Dict[str, Any]) -> Manifest:
    shards = [state.shard(s.file) for s in plan.shards]
    rejected = list(plan.rejected) + [r for s in plan.shards for r in state.rejected(s.file)]
    counts = label_counts(shards)
    options = {k: common[k] for k in ("quality", "shard_samples", "seed", "folds", "fold_col", "test_csv_sha256")}
    if plan.classes and not all(isinstance(c, int) for c in plan.classes):
        options["classes"] = plan.classes  # `.cls` holds the index into this list
    has_label = bool(label_col) and label_col in plan.schema
    return Manifest(format=fmt, schema=dict(plan.schema), shards=shards, id_col=id_col,
                    label_col=label_col if has_label else None, group_col=group_col or None, image_size=size,
                    aspect=aspect, num_folds=plan.num_folds, class_counts=counts,
                    source_csv_sha256=common["csv_sha256"], rejected=rejected, options=options,
                    kitpkg_version=__version__)


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
    for fold in manifest.folds():
        shards = manifest.select("train", [fold])
        counts = label_counts(shards)
        extra = f"  classes {counts}" if counts else ""
        lines.append(f"  fold {fold}: {sum(s.samples for s in shards):6d} samples in {len(shards)} shards{extra}")
    unfolded = [s for s in manifest.select("train") if s.fold is None]
    if unfolded:
        lines.append(f"  train (no folds): {sum(s.samples for s in unfolded)} samples in {len(unfolded)} shards")
    if manifest.select("test"):
        lines.append(f"  test: {manifest.num_samples('test')} samples in {len(manifest.select('test'))} shards")
    if manifest.class_counts:
        lines.append(f"  class counts ({manifest.label_col}): {manifest.class_counts}")
    lines.append(f"  rejected: {len(manifest.rejected)}"
                 + "".join(f"\n    {r['id'] or r['file']}: {r['reason']}" for r in manifest.rejected[:5])
                 + ("\n    …" if len(manifest.rejected) > 5 else ""))
    return "\n".join(lines)
