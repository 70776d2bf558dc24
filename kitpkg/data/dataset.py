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
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import KitError
from ..shards.manifest import Manifest, load_manifest
from ..shards.reader import Record, open_shard, read_sample
from ..shards.tfrecord import RecordError
from .buffers import batch_tensor, begin_worker_iteration
from .cache import ShardCache
from .decode import Size, apply_transform, as_size, decode_image, resize, seed_transform
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
                 world_size: Optional[int] = None, rank: Optional[int] = None):
        self.manifest = as_manifest(manifest)
        self.split, self.training = split, (split == "train") if training is None else training
        self.sources = [(self.manifest, i) for i in select_shards(self.manifest, split, fold, folds)]
        for other in map(as_manifest, extra):  # extra training data: every train shard of other manifests
            self.sources += [(other, i) for i in select_shards(other, "train", folds=other.folds())]
        self.transform, self.strict, self.seed = transform, strict, int(seed)
        self.size: Optional[Size] = as_size(image_size)
        self.cache = ShardCache(cache_dir) if cache_dir else None
        if world_size is None or rank is None:
            world_size, rank = _dist_env()
        counts = tuple(m.shards[i].samples for m, i in self.sources)
        self.partition = Partition(counts, batch_size, seed=self.seed, shuffle=self.training, window=shuffle_window,
                                   even=self.training, drop_last=drop_last and self.training,
                                   world_size=world_size, rank=rank)
        self.labels = [(m.label_col, _label_dtype(m)) for m, _ in self.sources]
        # (epoch, first batch) shared with DataLoader workers, persistent ones included: set before each iter()
        self._position = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.errors_as_items = False  # ShardLoader turns worker errors into one clean KitError in the main process
        self._buffers = None  # set by a ShardLoader only while it starts its workers (buffers.py)

    @property
    def batch_size(self) -> int:
        """Samples per batch (the last batch of an epoch may be shorter unless drop_last)."""
        return self.partition.batch_size

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return len(self.partition)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (shuffle order) and the first batch the next iteration yields."""
        self._position[0], self._position[1] = int(epoch), int(start_batch)

    def cache_shards(self, background: bool = True) -> None:
        """Copy this dataset's shards to `cache_dir` (in the order epoch 0 reads them), optionally in the background."""
        if self.cache is None:
            return
        order = list(dict.fromkeys(self.partition.rank_stream(0)[:, 0].tolist()))
        self.cache.fetch_all([self.sources[s] for s in order], background=background)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        workers, worker_id = (info.num_workers, info.id) if info else (1, 0)
        if info is not None:
            _configure_worker()
            begin_worker_iteration(self._buffers)
        epoch, start = (int(x) for x in self._position.tolist())
        stream = self.partition.rank_stream(epoch)
        reader = _Reader(self.sources, self.cache, sorted({c for c, _ in self.labels if c}))
        try:
            for b, batch in self.partition.batches(epoch, start, workers, worker_id, stream):
                try:
                    out = self._batch(reader, stream, batch, (epoch, b))
                except (KitError, OSError) as err:
                    if not self.errors_as_items:
                        raise
                    yield {"_error": str(err)}
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

    def _batch(self, reader: _Reader, stream: np.ndarray, batch: np.ndarray, key: Tuple[int, int]):
        slots: List[Optional[Tuple[int, Record, np.ndarray]]] = [None] * len(batch)
        damage = []
        for source, positions in read_runs(batch):  # file order inside the batch: forward reads only
            for pos in positions:
                record, pixels, bad = self._read(reader, source, int(batch[pos, 1]))
                slots[pos] = None if bad else (source, record, pixels)
                damage += [bad] if bad else []
        if damage and self.training:
            self._fill(reader, stream, slots, (key[1] + 1) * self.batch_size, damage)
        slots = [s for s in slots if s is not None]
        if not slots:
            return None
        if self.transform is not None:
            seed_transform(self.transform, int(np.random.SeedSequence([self.seed, *key]).generate_state(1)[0]),
                           globally=get_worker_info() is not None)
        image, ticket = self._collate([p for _, _, p in slots])
        out = {"image": image, "target": self._targets(slots), "id": [r.id for _, r, _ in slots]}
        if ticket is not None:
            out["_buffer"] = ticket  # a recycled buffer: ShardLoader frees it when the batch dies (buffers.py)
        if damage:
            out["_damage"] = damage
        return out

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

    def _collate(self, images: List[np.ndarray]) -> Tuple[torch.Tensor, Any]:
        size = self.size
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
        outs = [apply_transform(self.transform, resize(img, size)) for img in images]
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

    def _targets(self, slots: list) -> torch.Tensor:
        values, dtype = [], torch.int64
        for source, record, _ in slots:
            col, kind = self.labels[source]
            # wds samples may carry the label only as KEY.cls
            value = record.fields.get(col, record.fields.get("cls")) if col else None
            values.append(-1 if value is None or isinstance(value, (list, str)) else value)
            dtype = torch.float32 if kind == "float" else dtype
        return torch.tensor(values, dtype=dtype)


def _label_dtype(manifest: Manifest) -> str:
    kind = manifest.schema.get(manifest.label_col or "", "int64")
    return "float" if str(kind).startswith("float") else "int64"
