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
  3. sample   `_sample_stage`, the one per-sample CPU hook, in training only: resize the decoded HWC uint8 image to
              `image_size`, then the CPU augmentation stage (`TrainOptions.augment`, `data.aug.cpu`), seeded per
              sample by `augment.sample_seed(seed, epoch, batch, position)` -- so a resumed epoch sees the same
              draws whatever the worker count. Without it the decoded image goes straight to step 4.
  4. collate  `_collate`: the images resized into one (recycled, shared) B×H×W×3 uint8 buffer, yielded as a
              B×3×H×W view.
  5. columns  `_columns`: the other data keys, "target", "id" and with a `meta` encoder "meta" (B×width float32,
              the `model.meta` columns read in step 1, encoded by `meta.MetaEncoder`). "target" (targets.py): one
              label column gives B int64 class indices or B float32, several (K) float32 B×K in column order; -1
              (-1.0 per column) where a sample has no label.
  6. message  a `message.WorkerMessage` (data batch + buffer ticket + damaged samples + error) to the ShardLoader,
              which yields the data batch alone; outside `serve()` this dataset yields the data batch itself.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..augment.cpu import augment_sample, sample_seed
from ..config import class_weight_targets
from ..errors import KitError
from ..shards.formats import RecordError
from ..shards.manifest import Manifest, ShardInfo, load_manifest
from ..shards.reader import Record, open_shard, read_sample
from .buffers import BatchBuffers, batch_tensor, begin_worker_iteration
from .cache import ShardCache
from .decode import Size, as_size, decode_image, resize
from .message import Damage, LoaderLink, WorkerMessage, report_damage
from .meta import MetaEncoder, check_meta_columns
from .partition import Partition, read_runs
from .targets import LabelTargets, collate_targets, refuse_class_weights
from .worker import start_worker

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


@dataclass(frozen=True)
class TrainOptions:
    """What only training does (eval, test and predict ignore all of it): shuffle, oversample, augment, drop."""

    shuffle_window: int = 4096  # samples shuffled together, after the shard order is shuffled (partition.py)
    class_weights: Optional[Mapping[Any, float]] = None  # data.sampling.class_weights: repeats per class
    augment: Any = None  # the built CPU stage (`augment.stages_of(config)[0]`), applied per sample (step 3)
    drop_last: bool = False  # drop each rank's last, shorter batch


class _Reader:
    """Random access to samples by (source, index) with a few open files kept per worker."""

    def __init__(self, sources: List[_Source], cache: Optional[ShardCache], keys: Sequence[str]):
        self.sources, self.cache, self.keys = sources, cache, keys
        self.files: "OrderedDict[int, Any]" = OrderedDict()

    def read(self, source: int, sample: int) -> Record:
        src = self.sources[source]
        return read_sample(self._file(source), src.manifest, src.index, sample, check_crc=True, keys=self.keys)

    def _file(self, source: int):
        if source in self.files:
            self.files.move_to_end(source)
            return self.files[source]
        src = self.sources[source]
        path = self.cache.resolve(src.manifest, src.index) if self.cache else src.manifest.path(src.shard)
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
    """Decoded batches {"image", "target", "id"} of a manifest's split; see the module docstring.

    What to read: `split` of `manifest` (`fold`/`folds`: select_shards) plus every train shard of the `extra`
    manifests. How: `batch_size`, `seed`, `training` (default: split == "train") with `train_options`, this rank
    (`world_size`/`rank`, default torch.distributed's). Per sample: `image_size`, `strict` (damage raises),
    `cache_dir` (local shard copies), `meta` (the encoder of the model.meta columns)."""

    def __init__(self, manifest: ManifestLike, split: str = "train", fold: Optional[int] = None, *,
                 folds: Optional[Sequence[int]] = None, extra: Sequence[ManifestLike] = (), batch_size: int = 64,
                 seed: int = 0, training: Optional[bool] = None, train_options: Optional[TrainOptions] = None,
                 image_size: Union[None, int, Tuple[int, int]] = None, strict: bool = False,
                 cache_dir: Optional[str] = None, world_size: Optional[int] = None, rank: Optional[int] = None,
                 meta: Optional[MetaEncoder] = None):
        self.manifest = as_manifest(manifest)
        self.split, self.training = split, (split == "train") if training is None else training
        self.sources = _sources(self.manifest, split, fold, folds, extra)
        self.strict, self.seed, self.meta = strict, int(seed), meta
        train = train_options or TrainOptions()
        self.augment = train.augment if self.training else None  # the CPU stage: never eval/test/predict
        for m in {id(s.manifest): s.manifest for s in self.sources}.values():  # each shard set once
            check_meta_columns(meta.names if meta else (), m.schema, m.root)
        self.size: Optional[Size] = as_size(image_size)
        self.cache = ShardCache(cache_dir) if cache_dir else None
        if world_size is None or rank is None:
            world_size, rank = _dist_env()
        counts = tuple(s.shard.samples for s in self.sources)
        weights = self._sample_weights(train.class_weights) if train.class_weights and self.training else None
        self.partition = Partition(counts, batch_size, seed=self.seed, shuffle=self.training,
                                   window=train.shuffle_window, even=self.training,
                                   drop_last=train.drop_last and self.training, world_size=world_size, rank=rank,
                                   weights=weights)
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
        refuse_class_weights(self.manifest)
        by_target = class_weight_targets(class_weights, self.manifest)
        out: List[float] = []
        for src in self.sources:
            shard, classes = src.shard, src.label.classes
            if shard.labels is None:
                raise KitError(f"{src.manifest.root}: data.sampling.class_weights needs the labels of {shard.file}, "
                               "which the manifest does not store; re-run `kitpkg convert` with the label column")
            out += [by_target.get(classes.get(v, v) if isinstance(v, str) else v, 1.0) for v in shard.labels]
        return tuple(out)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (shuffle order) and the first batch the next iteration yields."""
        self._position[0], self._position[1] = int(epoch), int(start_batch)

    def cache_shards(self, background: bool = True) -> None:
        """Copy this dataset's shards to `cache_dir` (in the order epoch 0 reads them), optionally in the background."""
        if self.cache is None:
            return
        order = list(dict.fromkeys(self.partition.rank_stream(0)[:, 0].tolist()))
        self.cache.fetch_all([(self.sources[s].manifest, self.sources[s].index) for s in order],
                             background=background)

    def rows(self, columns: Sequence[str]) -> Iterator[Dict[str, Any]]:
        """The `columns` of every sample of this dataset's shards, once each in file order (fitting `model.meta`);
        damaged samples are left out (they are never trained on either)."""
        reader = _Reader(self.sources, self.cache, list(columns))
        try:
            for source, src in enumerate(self.sources):
                for sample in range(src.shard.samples):
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
            start_worker()
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
                raise RecordError(self.sources[source].shard.file, record.offset,
                                  f"undecodable image of sample {record.id!r} ({err})") from None
            return record, pixels, None
        except RecordError as err:
            if self.strict:
                raise KitError(f"damaged shard: {err} (strict=True; use strict=False to skip damaged samples)") \
                    from None
            return None, None, (err.shard, err.offset, err.reason)

    def _fields(self) -> List[str]:
        """The record fields a batch needs besides the image (step 1): the label columns and the meta columns."""
        return sorted({c for s in self.sources for c in s.label.cols} | set(self.meta.names if self.meta else ()))

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
        image, ticket = self._collate([p for _, _, p in slots], key)
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

    def _collate(self, images: List[np.ndarray], key: Tuple[int, int]) -> Tuple[torch.Tensor, Any]:
        """Steps 3-4: each image through the sample stage (training), then all into one B×3×H×W uint8 batch."""
        if self.augment:  # the CPU stage (training), on the images at their final size
            images = [self._sample_stage(img, sample_seed(self.seed, *key, i)) for i, img in enumerate(images)]
        if self.size is None and any(img.shape != images[0].shape for img in images):
            raise KitError(f"images differ in size ({images[0].shape[:2]} vs others) in {self.manifest.root}; "
                           "set image_size=...")
        size = self.size or images[0].shape[:2]
        buf, ticket = batch_tensor((len(images), size[0], size[1], 3), torch.uint8)
        arr = buf.numpy()
        for i, img in enumerate(images):
            resize(img, size, out=arr[i])
        return buf.permute(0, 3, 1, 2), ticket  # B×3×H×W view of HWC memory (= channels_last), no copy

    def _sample_stage(self, img: np.ndarray, seed: int) -> np.ndarray:
        """Step 3, the one per-sample CPU hook: one decoded HWC uint8 image resized to `image_size`, then the CPU
        stage with this sample's seed."""
        return augment_sample(self.augment, resize(img, self.size), seed)

    def _targets(self, slots: list) -> torch.Tensor:
        """The batch's targets (targets.collate_targets: B int64 or float32, B×K float32 for K label columns)."""
        return collate_targets([(self.sources[source].label, record) for source, record, _ in slots], self.training)


@dataclass(frozen=True)
class _Source:
    """One shard the dataset reads: shard `index` of `manifest`, and how its labels become targets."""

    manifest: Manifest
    index: int
    label: LabelTargets

    @property
    def shard(self) -> ShardInfo:
        """The shard's manifest entry."""
        return self.manifest.shards[self.index]


def _sources(main: Manifest, split: str, fold: Optional[int], folds: Optional[Sequence[int]],
             extra: Sequence[ManifestLike]) -> List[_Source]:
    """The shards of `split` of `main`, then every train shard of the `extra` manifests (training data only)."""
    picked = [(main, i) for i in select_shards(main, split, fold, folds)]
    for other in map(as_manifest, extra):
        picked += [(other, i) for i in select_shards(other, "train", folds=other.folds())]
    labels = {id(m): LabelTargets.of(m, main) for m, _ in picked}  # text labels indexed by the main set's classes
    return [_Source(m, i, labels[id(m)]) for m, i in picked]


def _data_only(messages: Iterator[WorkerMessage]) -> Iterator[Dict[str, Any]]:
    """The data batches of `messages`, warning once per damaged shard (plain iteration, no ShardLoader)."""
    log: List[Damage] = []
    warned: set = set()
    for message in messages:
        report_damage(message.damaged, log, warned)
        yield message.batch
