"""ShardDataModule: the loaders the trainer gets (contract in /tmp/kit/CONTRACT.md, "Loader -> trainer")."""
from __future__ import annotations

import pytest
import torch

from kitpkg.data.datamodule import ShardDataModule
from kitpkg.data.loader import ShardLoader


def _ids(loader):
    return [i for b in loader for i in b["id"]]


def test_loaders_follow_the_contract(any_manifest, tmp_path):
    dm = ShardDataModule(str(any_manifest.root), fold=1, batch_size=8, num_workers=2, seed=3,
                         cache_dir=str(tmp_path / "cache"))
    train = dm.train_dataloader()
    assert isinstance(train, ShardLoader) and train is dm.train_dataloader(), "one stateful train loader"
    assert train.persistent_workers and not train.pin_memory  # no GPU here: pinning would only cost
    assert callable(train.state_dict) and callable(train.load_state_dict)
    batch = next(iter(train))
    assert set(batch) == {"image", "target", "id"}
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 64, 64)
    assert batch["target"].dtype == torch.int64 and len(batch["id"]) == 8
    fold_of = any_manifest.fold_of()
    val = _ids(dm.val_dataloader())
    assert val == [i for s in any_manifest.select("train", [1]) for i in s.ids]
    assert set(_ids(dm.train_dataloader())) == {i for i, k in fold_of.items() if k != 1}
    test = [b for b in dm.test_dataloader()]
    assert all((b["target"] == -1).all() for b in test) and len(_ids(test)) == 10
    assert _ids(dm.predict_dataloader()) == _ids(test)
    assert _ids(dm.eval_dataloader("train", folds=[0, 2])) == [i for s in any_manifest.select("train", [0, 2])
                                                              for i in s.ids]


def test_all_folds_extra_data_and_image_size(tfrecord_manifest, wds_manifest):
    dm = ShardDataModule(tfrecord_manifest, fold=None, batch_size=16, num_workers=0, extra_train=[wds_manifest],
                         image_size=32)
    assert dm.val_dataloader() == []
    assert len(_ids(dm.train_dataloader())) == 96, "48 own + 48 extra training samples"
    assert next(iter(dm.test_dataloader()))["image"].shape[2:] == (32, 32)


@pytest.mark.slow
def test_lightning_fit_and_predict_with_the_datamodule(tfrecord_manifest):
    pl = pytest.importorskip("pytorch_lightning")

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 1)

        def forward(self, batch):
            return self.head(batch["image"].float().mean(dim=(2, 3)) / 255).squeeze(1)

        def training_step(self, batch, _):
            return torch.nn.functional.binary_cross_entropy_with_logits(self(batch), batch["target"].float())

        def validation_step(self, batch, _):
            self.log("val_loss", torch.nn.functional.binary_cross_entropy_with_logits(self(batch),
                                                                                      batch["target"].float()))

        def predict_step(self, batch, _):
            return batch["id"], self(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ShardDataModule(tfrecord_manifest, fold=0, batch_size=8, num_workers=2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), datamodule=dm)
    assert "val_loss" in trainer.callback_metrics
    preds = trainer.predict(Tiny(), datamodule=dm)
    assert sorted(i for ids, _ in preds for i in ids) == sorted(i for s in tfrecord_manifest.select("test")
                                                                 for i in s.ids)
