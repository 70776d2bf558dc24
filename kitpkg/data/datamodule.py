"""ShardDataModule: the LightningDataModule the trainer uses: manifest + fold + options -> train/val/test loaders."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch

from .dataset import ManifestLike, ShardDataset, TrainOptions, as_manifest
from .loader import ShardLoader
from .meta import MetaEncoder


class ShardDataModule(pl.LightningDataModule):
    """Train on all folds but `fold`, validate on `fold` (None: train on everything, no validation), test on the test
    split. Batches: {"image": uint8 B×3×H×W, "target", "id": list[str]}, and with `meta` columns "meta": float
    B×width. "target" follows the manifest's label columns: one column, B int64 class indices (text classes, integers)
    or B float32 (a float column); several (K), float32 B×K in column order; -1 (a K-vector of -1.0 for several) where
    a sample has no label (the test split). The train loader is stateful (exact mid-epoch resume from Lightning
    checkpoints). `train_options`: what only training does (shuffle window, `class_weights` oversampling, the built
    CPU stage `augment`: dataset.TrainOptions); `meta` names manifest columns, encoded by `meta_encoder` or, when None,
    by one fitted on this fold's training samples (`fitted_meta`)."""

    def __init__(self, manifest: ManifestLike, fold: Optional[int] = 0, batch_size: int = 64, num_workers: int = 2,
                 seed: int = 42, *, extra_train: Sequence[ManifestLike] = (), eval_batch_size: Optional[int] = None,
                 train_options: Optional[TrainOptions] = None, image_size: Union[None, int, Tuple[int, int]] = None,
                 strict: bool = False, cache_dir: Optional[str] = None, pin_memory: Optional[bool] = None,
                 meta: Sequence[str] = (), meta_encoder: Optional[MetaEncoder] = None):
        super().__init__()
        self.manifest = as_manifest(manifest)
        self.fold, self.batch_size, self.num_workers, self.seed = fold, batch_size, num_workers, seed
        self.extra_train = [as_manifest(m) for m in extra_train]
        self.eval_batch_size, self.train_options = eval_batch_size or batch_size, train_options or TrainOptions()
        self.cache_dir, self.strict, self.image_size = cache_dir, strict, image_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.meta, self._meta_encoder = list(meta), meta_encoder
        self._train: Optional[ShardLoader] = None

    def _dataset(self, split: str, **kwargs: Any) -> ShardDataset:
        """A ShardDataset of `split` with the settings every split shares (a new per-sample option goes here)."""
        return ShardDataset(self.manifest, split, self.fold, seed=self.seed, image_size=self.image_size,
                            strict=self.strict, cache_dir=self.cache_dir, meta=self.fitted_meta(), **kwargs)

    def fitted_meta(self) -> Optional[MetaEncoder]:
        """The `meta` columns' encoder: given, or fitted once on this fold's training samples (None without meta)."""
        if self.meta and self._meta_encoder is None:
            train = ShardDataset(self.manifest, "train", self.fold, extra=self.extra_train, world_size=1, rank=0,
                                 cache_dir=self.cache_dir)
            self._meta_encoder = MetaEncoder.fit(self.meta, train.rows(self.meta))
        return self._meta_encoder

    def _loader(self, dataset: ShardDataset) -> ShardLoader:
        dataset.cache_shards(background=True)
        return ShardLoader(dataset, num_workers=self.num_workers, pin_memory=self.pin_memory,
                           persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> ShardLoader:
        """The shuffled, stateful training loader (one object per DataModule, so its state survives reloads)."""
        if self._train is None:
            ds = self._dataset("train", batch_size=self.batch_size, extra=self.extra_train,
                               train_options=self.train_options)
            weights = dict(self.train_options.class_weights or {})
            if weights and ds.partition.rank == 0:
                print(f"kitpkg: data.sampling.class_weights {weights}: an epoch holds {ds.epoch_samples} "
                      f"training samples ({ds.partition.total} in the shards)", flush=True)
            self._train = self._loader(ds)
        return self._train

    def eval_dataloader(self, split: str = "val", folds: Optional[Sequence[int]] = None) -> ShardLoader:
        """Every sample of a selection exactly once across ranks and workers, in manifest order, with ids."""
        ds = self._dataset(split, folds=folds, batch_size=self.eval_batch_size, training=False)
        return self._loader(ds)

    def val_dataloader(self) -> Union[ShardLoader, List]:
        """Fold `fold` (an empty list when training on all folds)."""
        return [] if self.fold is None else self.eval_dataloader("val")

    def test_dataloader(self) -> ShardLoader:
        """The test split."""
        return self.eval_dataloader("test")

    def predict_dataloader(self) -> ShardLoader:
        """The test split (for `trainer.predict`)."""
        return self.eval_dataloader("test")

    def state_dict(self) -> dict:
        """Nothing extra: the train loader's own state is saved by Lightning under "combined_loader"."""
        return {}
