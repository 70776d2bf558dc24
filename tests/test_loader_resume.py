"""Exact mid-epoch resume: a real Lightning Trainer stops after N batches, resumes from its checkpoint, and sees exactly
the sample ids of an uninterrupted run -- mid-epoch and at epoch boundaries (a checkpoint after a training batch, or
after the epoch's validation), with and without DataLoader workers."""
from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")

from kitpkg.data.dataset import ShardDataset  # noqa: E402
from kitpkg.data.datamodule import ShardDataModule  # noqa: E402
from kitpkg.data.loader import ShardLoader  # noqa: E402
from kitpkg.errors import KitError  # noqa: E402

EPOCHS, BATCH = 3, 5  # fold 0 held out: 30 training samples -> 6 batches per epoch


class Crash(Exception):
    """Stands for a notebook session dying mid-training."""


class TinyModel(pl.LightningModule):
    """Mean colour -> logit; records the ids of every training batch."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(list(batch["id"]))
        x = batch["image"].float().mean(dim=(2, 3)) / 255
        return torch.nn.functional.binary_cross_entropy_with_logits(self.head(x).squeeze(1), batch["target"].float())

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class CrashAfter(pl.Callback):
    """Save a checkpoint after `steps` training batches (or, `after_validation`, after the validation that follows
    them: an end-of-epoch checkpoint as kitpkg's RunCheckpoints writes it), then die."""

    def __init__(self, steps, path, after_validation=False):
        self.steps, self.path, self.after_validation = steps, path, after_validation

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.steps and not self.after_validation:
            self._crash(trainer)

    def on_validation_end(self, trainer, pl_module):
        if trainer.global_step == self.steps and self.after_validation and not trainer.sanity_checking:
            self._crash(trainer)

    def _crash(self, trainer):
        trainer.save_checkpoint(self.path)
        raise Crash()


def _fit(manifest, workers, callbacks=(), ckpt=None):
    model = TinyModel()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=list(callbacks))
    dm = ShardDataModule(manifest, fold=0, batch_size=BATCH, num_workers=workers, seed=11)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    except Crash:
        pass
    return model.seen


@pytest.fixture(scope="module")
def uninterrupted(any_manifest):
    return _fit(any_manifest, workers=0)


@pytest.mark.parametrize("steps, workers, after_validation", [(4, 0, False), (6, 0, False), (7, 0, False),
                                                              (13, 2, False), (6, 0, True), (12, 2, True)])
def test_resumed_training_sees_exactly_the_uninterrupted_id_sequence(any_manifest, uninterrupted, tmp_path, steps,
                                                                     workers, after_validation):
    # 4: mid-epoch; 6: the last batch of epoch 0; 7: the first of epoch 1; 13: mid-epoch 2 with worker processes;
    # after validation: Lightning restores it as mid-epoch and calls iter() for the finished epoch, then the next one
    assert len(uninterrupted) == EPOCHS * 6
    assert uninterrupted[:6] != uninterrupted[6:12], "each epoch has its own order"
    ckpt = tmp_path / "crash.ckpt"
    before = _fit(any_manifest, workers, [CrashAfter(steps, ckpt, after_validation)])
    assert len(before) == steps
    state = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert state["samples"] == (steps % 6 or 6) * BATCH and state["epoch"] == (steps - 1) // 6
    after = _fit(any_manifest, workers, ckpt=str(ckpt))
    assert before + after == uninterrupted


def test_loader_state_round_trip_without_lightning(tfrecord_manifest):
    def loader():
        return ShardLoader(ShardDataset(tfrecord_manifest, "train", 1, batch_size=4, seed=3), num_workers=0)

    ref = loader()
    epochs = [[b["id"] for b in ref] for _ in range(2)]
    first = loader()
    it = iter(first)
    taken = [next(it)["id"] for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 0, "samples": 12, "seed": 3, "batch_size": 4, "world_size": 1}
    second = loader()
    second.load_state_dict(state)
    assert taken + [b["id"] for b in second] == epochs[0]
    assert [b["id"] for b in second] == epochs[1], "the next iter() starts the next epoch"


def test_an_iteration_that_hands_out_nothing_is_served_again(tfrecord_manifest):
    # Lightning's restore from a checkpoint written after the epoch's validation calls iter() for the finished epoch,
    # takes no batch, and calls iter() again for the next one: that must still be the epoch after the saved one
    def loader():
        return ShardLoader(ShardDataset(tfrecord_manifest, "train", 1, batch_size=4, seed=3), num_workers=0)

    ref = loader()
    epochs = [[b["id"] for b in ref] for _ in range(3)]
    done = loader()
    done.load_state_dict({"epoch": 0, "samples": done.dataset.partition.rank_samples(), "seed": 3, "batch_size": 4,
                          "world_size": 1})
    iter(done), iter(done)  # restore: one for the finished epoch, none taken; one for the next
    assert [b["id"] for b in done] == epochs[1]
    assert [b["id"] for b in done] == epochs[2], "an epoch that handed out batches counts"
    fresh = loader()
    iter(fresh)
    assert [b["id"] for b in fresh] == epochs[0]


def test_state_from_another_setup_is_refused(tfrecord_manifest):
    ld = ShardLoader(ShardDataset(tfrecord_manifest, "train", 1, batch_size=4, seed=3))
    with pytest.raises(KitError, match="batch_size=8 but this run has batch_size=4"):
        ld.load_state_dict({"epoch": 0, "samples": 8, "seed": 3, "batch_size": 8, "world_size": 1})
