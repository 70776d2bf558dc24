"""ShardDataset: an IterableDataset over a manifest's shards that yields whole, decoded batches.

Which samples a worker reads comes from `partition.Partition` (pure); this module only reads, decodes and collates.
Workers yield whole batches (use `ShardLoader`, or a DataLoader with ``batch_size=None``): one IPC message per batch
instead of one per sample, images decoded straight into a shared-memory buffer (recycled under a ShardLoader:
buffers.py).

Damage (a CRC mismatch, a truncated shard, undecodable image bytes): by default the sample is skipped and reported
(`ShardLoader.damaged`, one warning per shard); in training its slot is filled with the next readable samples of the
rank's stream so the batch keeps its size and every rank its batch count (DDP never hangs; the fillers are seen twice
that epoch); in eval the batch is simply shorter (exactly-once minus the damaged). ``strict=True`` raises a KitError
naming the shard and offset instead.

What a worker does per batch (`_batch`), step by step -- and where the next stages go:
  1. read     `_Reader.read`: each sample's image bytes and the record fields `_fields()` names (the label columns;
              a per-sample metadata column is one more name there).
  2. decode   `decode.decode_image`: RGB HWC uint8, DCT-shrunk towards `image_size`.
  3. sample   `_sample_stage`: per sample, on HWC uint8 after decode: resize, then in training the CPU augmentation
              stage `augment` (`data.aug.cpu`, seeded per sample by `augment.sample_seed(seed, epoch, batch,
              position)`), then `transform`, seeded per batch from (seed, epoch, batch) by `decode.seed_transform`
              -- so a resumed epoch sees the same draws. Without a transform the (augmented) image is resized
              straight into the batch buffer; without either, the decoded image is (no copy): the fast path.
  4. collate  `_collate`: the images into one (recycled, shared) B×H×W×3 buffer, yielded as a B×3×H×W view.
  5. columns  `_columns`: the other data keys, "target", "id" and with a `meta` encoder "meta" (B×width float32,
              the `model.meta` columns read in step 1, encoded by `meta.MetaEncoder`).
  6. message  a `message.WorkerMessage` (data batch + buffer ticket + damaged samples + error) to the ShardLoader,
              which yields the data batch alone; outside `serve()` this dataset yields the data batch itself.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..augment.cpu import augment_sample, sample_seed
from ..config import class_weight_targets
from ..errors import KitError
from ..shards.formats import shard_format
from ..shards.manifest import Manifest, load_manifest
from ..shards.reader import Record, open_shard, read_sample
from ..shards.tfrecord import RecordError
from .buffers import BatchBuffers, batch_tensor, begin_worker_iteration
from .cache import ShardCache
from .decode import Size, apply_transform, as_size, decode_image, resize, seed_transform
from .message import Damage, LoaderLink, WorkerMessage, report_damage
from .meta import MetaEncoder, check_meta_columns
from .partition import Partition, read_runs

SPLITS = ("train", "val", "test")
ManifestLike = Union[Manifest, str, os.PathLike]
_OPEN_FILES = 32  # shard files a worker keeps open (the shuffle window touches a few shards at a time)


def as_manifest(manifest: ManifestLike) -> Manifest:
    """A Manifest, loading it when given a folder, manifest.json path or URL."""
    return manifest if isinstance(manifest, Manifest) else load_manifest(os.fspath(manifest))


def select_shards(manifest: Manifest, split: str, fold: Optional[int] = None,
                  folds: Optional[Sequence[int]] = None) -> List[int]:
    """Shard indices for `train` (all folds but `fold`), `val` (fold `fold`), `test`; `folds` picks train folds."""
    if split not in SPLITS:
        raise KitError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if split == "test":
        return [i for i, s in enumerate(manifest.shards) if s.split == "test"]
    if folds is None:
        if split == "val" and fold is None:
            raise KitError("split='val' needs fold=k (or folds=[...])")
        present = manifest.folds()
        if fold is not None and fold not in present:
            raise KitError(f"fold={fold}: the manifest has folds {present}")
        folds = [fold] if split == "val" else [k for k in present if k != fold]
    wanted = {int(k) for k in folds}
    return [i for i, s in enumerate(manifest.shards) if s.split == "train" and s.fold in wanted]


def _dist_env() -> Tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _configure_worker() -> None:
    """Per worker process: one thread per library (the workers are the parallelism) and a malloc that keeps memory."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(0)  # 0 = sequential; 1 can deadlock in a fork of a process that used the pool
    # Every decoded image is a fresh ~0.8 MB array; glibc returns such blocks to the OS on free and page-faults them
    # back on the next image (a quarter of a worker's CPU went to the kernel). Raising the mmap/trim thresholds keeps
    # them in the heap: +5-10 % images/s here (benchmarks/loader.py), memory stays flat.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): nothing to tune


class _Reader:
    """Random access to samples by (source, index) with a few open files kept per worker."""

    def __init__(self, sources: List[Tuple[Manifest, int]], cache: Optional[ShardCache], keys: Sequence[str]):
        self.sources, self.cache, self.keys = sources, cache, keys
        self.files: "OrderedDict[int, Any]" = OrderedDict()

    def read(self, source: int, sample: int) -> Record:
        manifest, index = self.sources[source]
        return read_sample(self._file(source), manifest, index, sample, check_crc=True, keys=self.keys)

    def _file(self, source: int):
        if source in self.files:
            self.files.move_to_end(source)
            return self.files[source]
        manifest, index = self.sources[source]
        path = self.cache.resolve(manifest, index) if self.cache else manifest.path(manifest.shards[index])
        try:
            f = open_shard(path)
        except FileNotFoundError:
            raise KitError(f"{path}: shard listed in the manifest is missing") from None
        self.files[source] = f
        if len(self.files) > _OPEN_FILES:
            self.files.popitem(last=False)[1].close()
        return f

    def close(self) -> None:
        while self.files:
            self.files.popitem()[1].close()


class ShardDataset(IterableDataset):
    """Decoded batches {"image", "target", "id"} of a manifest's split; see the module docstring."""

    def __init__(self, manifest: ManifestLike, split: str = "train", fold: Optional[int] = None, *,
                 folds: Optional[Sequence[int]] = None, batch_size: int = 64, training: Optional[bool] = None,
                 transform: Optional[Callable] = None, image_size: Union[None, int, Tuple[int, int]] = None,
                 seed: int = 0, shuffle_window: int = 4096, drop_last: bool = False, strict: bool = False,
                 cache_dir: Optional[str] = None, extra: Sequence[ManifestLike] = (),
                 world_size: Optional[int] = None, rank: Optional[int] = None, augment: Any = None,
                 meta: Optional[MetaEncoder] = None, class_weights: Optional[Mapping[Any, float]] = None):
        self.manifest = as_manifest(manifest)
        self.split, self.training = split, (split == "train") if training is None else training
        self.sources = [(self.manifest, i) for i in select_shards(self.manifest, split, fold, folds)]
        for other in map(as_manifest, extra):  # extra training data: every train shard of other manifests
            self.sources += [(other, i) for i in select_shards(other, "train", folds=other.folds())]
        self.transform, self.strict, self.seed = transform, strict, int(seed)
        self.augment = augment if self.training else None  # the CPU stage: training only, never eval/test/predict
        self.meta = meta
        for m in {id(m): m for m, _ in self.sources}.values():  # each shard set once
            check_meta_columns(meta.names if meta else (), m.schema, m.root)
        self.size: Optional[Size] = as_size(image_size)
        self.cache = ShardCache(cache_dir) if cache_dir else None
        if world_size is None or rank is None:
            world_size, rank = _dist_env()
        counts = tuple(m.shards[i].samples for m, i in self.sources)
        self.labels = [_LabelColumn.of(m, self.manifest) for m, _ in self.sources]
        weights = self._sample_weights(class_weights) if class_weights and self.training else None
        self.partition = Partition(counts, batch_size, seed=self.seed, shuffle=self.training, window=shuffle_window,
                                   even=self.training, drop_last=drop_last and self.training,
                                   world_size=world_size, rank=rank, weights=weights)
        # (epoch, first batch) shared with DataLoader workers, persistent ones included: set before each iter()
        self._position = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.link: Optional[LoaderLink] = None  # set only inside `serve()`: iterators made then send WorkerMessages

    @property
    def batch_size(self) -> int:
        """Samples per batch (an epoch's last batch may be shorter, or in training one longer: partition.py rule 5)."""
        return self.partition.batch_size

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return len(self.partition)

    @property
    def epoch_samples(self) -> int:
        """Samples an epoch holds across all ranks (more than the shards hold when oversampled: partition.py)."""
        return self.partition.epoch_total

    def _sample_weights(self, class_weights: Mapping[Any, float]) -> Tuple[float, ...]:
        """Per-sample repeat weights (partition order) from `data.sampling.class_weights` and the manifest labels."""
        by_target = class_weight_targets(class_weights, self.manifest)
        out: List[float] = []
        for (m, i), lab in zip(self.sources, self.labels):
            shard = m.shards[i]
            if shard.labels is None:
                raise KitError(f"{m.root}: data.sampling.class_weights needs the labels of {shard.file}, which the "
                               "manifest does not store; re-run `kitpkg convert` with the label column")
            out += [by_target.get(lab.classes.get(v, v) if isinstance(v, str) else v, 1.0) for v in shard.labels]
        return tuple(out)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (shuffle order) and the first batch the next iteration yields."""
        self._position[0], self._position[1] = int(epoch), int(start_batch)

    def cache_shards(self, background: bool = True) -> None:
        """Copy this dataset's shards to `cache_dir` (in the order epoch 0 reads them), optionally in the background."""
        if self.cache is None:
            return
        order = list(dict.fromkeys(self.partition.rank_stream(0)[:, 0].tolist()))
        self.cache.fetch_all([self.sources[s] for s in order], background=background)

    def rows(self, columns: Sequence[str]) -> Iterator[Dict[str, Any]]:
        """The `columns` of every sample of this dataset's shards, once each in file order (fitting `model.meta`);
        damaged samples are left out (they are never trained on either)."""
        reader = _Reader(self.sources, self.cache, list(columns))
        try:
            for source, (m, i) in enumerate(self.sources):
                for sample in range(m.shards[i].samples):
                    try:
                        fields = reader.read(source, sample).fields
                    except RecordError:
                        continue
                    yield {c: fields.get(c) for c in columns}
        finally:
            reader.close()

    @contextmanager
    def serve(self, pool: Optional[BatchBuffers] = None) -> Iterator[None]:
        """ShardLoader's side of the contract: iterators made inside the block (in worker processes started there, or
        here) yield `WorkerMessage`s and write images into `pool`, for as long as they live (message.py)."""
        self.link = LoaderLink(pool)
        try:
            yield
        finally:
            self.link = None  # the iterators (and workers) made inside keep theirs; nothing else gets the pool

    def __iter__(self) -> Iterator[Any]:
        """This process's share of the epoch's batches: data batches, or `WorkerMessage`s inside `serve()`."""
        link = self.link  # read now, not at the first next(): the iterator keeps the link it was made under
        if link is not None:
            return self._messages(link.pool, errors_as_messages=True)
        return _data_only(self._messages(None, errors_as_messages=False))

    def _messages(self, pool: Optional[BatchBuffers], errors_as_messages: bool) -> Iterator[WorkerMessage]:
        info = get_worker_info()
        workers, worker_id = (info.num_workers, info.id) if info else (1, 0)
        if info is not None:
            _configure_worker()
            begin_worker_iteration(pool)
        epoch, start = (int(x) for x in self._position.tolist())
        stream = self.partition.rank_stream(epoch)
        reader = _Reader(self.sources, self.cache, self._fields())
        try:
            for b, batch in self.partition.batches(epoch, start, workers, worker_id, stream):
                try:
                    out = self._batch(reader, stream, batch, (epoch, b))
                except (KitError, OSError) as err:
                    if not errors_as_messages:
                        raise
                    yield WorkerMessage(None, error=str(err))  # the loader raises it in the main process
                    return
                if out is not None:
                    yield out
        finally:
            reader.close()

    def _read(self, reader: _Reader, source: int, sample: int) -> Tuple[Optional[Record], Optional[np.ndarray], Any]:
        try:
            record = reader.read(source, sample)
            try:
                pixels = decode_image(record.image, self.size)
            except ValueError as err:
                raise RecordError(self.sources[source][0].shards[self.sources[source][1]].file, record.offset,
                                  f"undecodable image of sample {record.id!r} ({err})") from None
            return record, pixels, None
        except RecordError as err:
            if self.strict:
                raise KitError(f"damaged shard: {err} (strict=True; use strict=False to skip damaged samples)") \
                    from None
            return None, None, (err.shard, err.offset, err.reason)

    def _fields(self) -> List[str]:
        """The record fields a batch needs besides the image (step 1): the label columns and the meta columns."""
        return sorted({lab.col for lab in self.labels if lab.col} | set(self.meta.names if self.meta else ()))

    def _batch(self, reader: _Reader, stream: np.ndarray, batch: np.ndarray,
               key: Tuple[int, int]) -> Optional[WorkerMessage]:
        slots: List[Optional[Tuple[int, Record, np.ndarray]]] = [None] * len(batch)
        damage: List[Damage] = []
        for source, positions in read_runs(batch):  # file order inside the batch: forward reads only
            for pos in positions:
                record, pixels, bad = self._read(reader, source, int(batch[pos, 1]))
                slots[pos] = None if bad else (source, record, pixels)
                damage += [bad] if bad else []
        if damage and self.training:
            self._fill(reader, stream, slots, self.partition.bounds(key[1])[1], damage)
        slots = [s for s in slots if s is not None]
        if not slots:
            return None
        if self.transform is not None:  # the sample stage's draws: a function of (seed, epoch, batch) only
            seed_transform(self.transform, int(np.random.SeedSequence([self.seed, *key]).generate_state(1)[0]),
                           globally=get_worker_info() is not None)
        seeds = [sample_seed(self.seed, key[0], key[1], i) for i in range(len(slots))] if self.augment else None
        image, ticket = self._collate([p for _, _, p in slots], seeds)
        return WorkerMessage({"image": image, **self._columns(slots)}, ticket, tuple(damage))

    def _columns(self, slots: list) -> Dict[str, Any]:
        """The batch's data keys besides "image" (step 5), one value per sample."""
        columns = {"target": self._targets(slots), "id": [r.id for _, r, _ in slots]}
        if self.meta is not None:
            columns["meta"] = torch.tensor([self.meta.transform(r.fields) for _, r, _ in slots], dtype=torch.float32)
        return columns

    def _fill(self, reader: _Reader, stream: np.ndarray, slots: list, pos: int, damage: list) -> None:
        # training keeps batch sizes: fill holes with the next readable samples of the rank stream (wrapping)
        for hole in [i for i, s in enumerate(slots) if s is None]:
            for step in range(len(stream)):
                source, sample = (int(x) for x in stream[(pos + step) % len(stream)])
                record, pixels, bad = self._read(reader, source, sample)
                if bad is None:
                    slots[hole], pos = (source, record, pixels), pos + step + 1
                    break
            else:
                raise KitError(f"no readable sample left in {len(stream)} samples; every shard read is damaged "
                               f"(first: {damage[0][0]} at offset {damage[0][1]}: {damage[0][2]})")

    def _collate(self, images: List[np.ndarray], seeds: Optional[List[int]]) -> Tuple[torch.Tensor, Any]:
        size = self.size
        if seeds is not None:  # the CPU stage (training), on the images at their final size
            images = [augment_sample(self.augment, resize(img, size), s) for img, s in zip(images, seeds)]
        if self.transform is None:
            if size is None and any(img.shape != images[0].shape for img in images):
                raise KitError(f"images differ in size ({images[0].shape[:2]} vs others) in {self.manifest.root}; "
                               "set image_size=... (or a transform that ends with a fixed-size resize/crop)")
            size = size or images[0].shape[:2]
            buf, ticket = batch_tensor((len(images), size[0], size[1], 3), torch.uint8)
            arr = buf.numpy()
            for i, img in enumerate(images):
                resize(img, size, out=arr[i])
            return buf.permute(0, 3, 1, 2), ticket  # B×3×H×W view of HWC memory (= channels_last), no copy
        outs = [self._sample_stage(img) for img in images]
        shapes = {tuple(np.shape(o)) for o in outs}
        if len(shapes) > 1:
            raise KitError(f"transform output shapes differ ({' vs '.join(map(str, sorted(shapes)))}); end the "
                           "transform with a fixed-size resize/crop or set image_size")
        if isinstance(outs[0], torch.Tensor):
            return torch.stack(outs), None
        first = np.asarray(outs[0])
        buf, ticket = batch_tensor((len(outs), *first.shape), torch.from_numpy(first[:0]).dtype)
        arr = buf.numpy()
        for i, o in enumerate(outs):
            arr[i] = o
        return (buf.permute(0, 3, 1, 2) if first.ndim == 3 else buf), ticket

    def _sample_stage(self, img: np.ndarray) -> Any:
        """Step 3 for one decoded HWC uint8 image: resize to `image_size`, then `transform` (seeded in `_batch`)."""
        return apply_transform(self.transform, resize(img, self.size))

    def _targets(self, slots: list) -> torch.Tensor:
        values = [self.labels[source].target(record, self.training) for source, record, _ in slots]
        floats = any(self.labels[source].kind == "float" for source, _, _ in slots)
        return torch.tensor(values, dtype=torch.float32 if floats else torch.int64)


@dataclass(frozen=True)
class _LabelColumn:
    """How one source's label becomes a target: numbers as stored, text labels as their index in `classes`."""

    col: Optional[str]
    kind: str  # "int64" or "float"
    classes: Dict[str, int]
    root: str
    member: Optional[str] = None  # the format's own label member, read when the row lacks the column (a tar's .cls)

    @classmethod
    def of(cls, manifest: Manifest, main: Manifest) -> "_LabelColumn":
        """The label column of `manifest`; text labels are indexed by `main`'s classes (the task's)."""
        kind = manifest.schema.get(manifest.label_col or "", "int64")
        own = manifest.classes()
        names = (main.classes() or own) if own is not None else []
        return cls(manifest.label_col, "float" if str(kind).startswith("float") else "int64",
                   {name: i for i, name in enumerate(names)}, manifest.root,
                   shard_format(manifest.format).label_member)

    def target(self, record: Record, training: bool) -> Any:
        """The record's target; -1 when it has none (test data); a text label that is no class fails in training."""
        value = record.fields.get(self.col, record.fields.get(self.member)) if self.col else None
        if isinstance(value, str) and self.classes:
            if value in self.classes:
                return self.classes[value]
            if training:
                raise KitError(f"{self.root}: sample {record.id!r} has the label {value!r}, which is not one of the "
                               f"classes {list(self.classes)}; fix the label and re-run `kitpkg convert`")
        return -1 if value is None or isinstance(value, (list, str)) else value


def _data_only(messages: Iterator[WorkerMessage]) -> Iterator[Dict[str, Any]]:
    """The data batches of `messages`, warning once per damaged shard (plain iteration, no ShardLoader)."""
    log: List[Damage] = []
    warned: set = set()
    for message in messages:
        report_damage(message.damaged, log, warned)
        yield message.batch
