"""The LightningModule on a tiny timm model with synthetic batches (no shards): input pipeline, losses, factories, fit."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from kitpkg.config import config_from_dict
from kitpkg.errors import KitError
from kitpkg.task import task_of_outputs
from kitpkg.train.losses import make_loss
from kitpkg.train.gpu_augment import GpuAugment
from kitpkg.train.model import KitModule, apply_view
from kitpkg.train.trainer import resolve_precision

from tiny_module import module_of

TINY = "test_resnet"  # timm's own test-sized model: ~0.4 M parameters, fast on 2 cores


def _config(**sections):
    data = {"data": {"shards": "unused", "image_size": 32, "batch_size": 8}, "model": {"name": TINY},
            "train": {"epochs": 2}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


def _module(num_classes=1, **sections) -> KitModule:
    return module_of(_config(**sections), num_classes)


class _Synthetic(torch.utils.data.Dataset):
    """Learnable uint8 images: positives are bright, negatives dark."""

    def __init__(self, n=64, num_classes=1, seed=0):
        g = torch.Generator().manual_seed(seed)
        classes = max(2, num_classes)
        self.targets = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randint(0, 60, (n, 3, 32, 32), generator=g)
        self.images = (noise + self.targets.view(-1, 1, 1, 1) * (180 // (classes - 1))).clamp(0, 255).to(torch.uint8)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        target = self.targets[i].float() if len(self.targets.unique()) <= 2 else self.targets[i]
        return {"image": self.images[i], "target": target, "id": f"s{i}"}


def _trainer(**kw):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


def test_preprocess_normalises_with_the_models_data_config():
    module = _module()
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(module.model)
    images = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    x = module.preprocess(images)
    expected = (1.0 - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-5)
    assert torch.allclose(module.preprocess(images.float() / 255), x, atol=1e-5)  # float input is taken as 0..1
    module.channels_last = True
    assert module.preprocess(images).is_contiguous(memory_format=torch.channels_last)


def test_views_are_dihedral_and_checked():
    x = torch.arange(2 * 3 * 4 * 4).view(2, 3, 4, 4)
    assert torch.equal(apply_view(apply_view(x, "hflip"), "hflip"), x)
    assert torch.equal(apply_view(x, "transpose")[0, 0, 1, 2], x[0, 0, 2, 1])
    assert torch.equal(apply_view(apply_view(x, "rot90"), "rot270"), x)
    assert torch.equal(apply_view(x, "rot180"), x.flip(-1).flip(-2))
    assert torch.equal(apply_view(x, "antitranspose"), apply_view(apply_view(x, "rot180"), "transpose"))
    with pytest.raises(KitError, match="square"):
        apply_view(torch.zeros(1, 3, 4, 6), "transpose")

ONE, THREE = task_of_outputs(1), task_of_outputs(3)  # a binary and a 3-class task


def test_losses():
    logits = torch.tensor([[8.0], [-8.0]])
    target = torch.tensor([1.0, 0.0])
    assert make_loss("bce", ONE)(logits, target) < 1e-3
    assert make_loss("bce", ONE, label_smoothing=0.2)(logits, target) > 0.5  # smoothing penalises over-confidence
    assert make_loss("focal", ONE)(logits, target) < make_loss("bce", ONE)(logits, target)
    multi = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 2])
    assert make_loss("ce", THREE)(multi, labels) < 0.02
    assert make_loss("ce", THREE, label_smoothing=0.1)(multi, labels) > make_loss("ce", THREE)(multi, labels)
    assert make_loss("focal", THREE)(multi, labels) < make_loss("ce", THREE)(multi, labels)
    with pytest.raises(KitError, match="bce needs a binary target"):
        make_loss("bce", THREE)


def test_precision_auto():
    assert resolve_precision("auto", on_gpu=False) == "32-true"
    assert resolve_precision("16-mixed", on_gpu=False) == "16-mixed"
    assert resolve_precision("32", on_gpu=True) == "32-true"


@pytest.mark.parametrize("num_classes, metric", [(1, "val_auc"), (3, "val_acc")])
def test_fit_learns_synthetic_data(num_classes, metric):
    torch.manual_seed(0)
    module = _module(num_classes, optim={"lr": 0.01}, sched={"name": "cosine", "warmup_epochs": 1})
    train = DataLoader(_Synthetic(64, num_classes, seed=0), batch_size=16, shuffle=True)
    val = DataLoader(_Synthetic(48, num_classes, seed=1), batch_size=16)
    trainer = _trainer(max_epochs=4)
    trainer.fit(module, train, val)
    assert trainer.callback_metrics[metric] > (0.9 if num_classes == 1 else 0.7)
    preds = trainer.predict(module, val)
    assert preds[0]["score"].shape == (16, num_classes)
    assert preds[0]["id"][:2] == ["s0", "s1"]


def test_optimizer_and_schedule_from_timm_factories():
    module = _module(optim={"name": "radam", "lookahead": True, "lr": 0.01},
                     sched={"name": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-4, "min_lr": 0.0,
                            "per_update": True}, train={"epochs": 3})
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = _trainer(max_epochs=3, callbacks=[Record()])
    trainer.fit(module, DataLoader(_Synthetic(32), batch_size=8))
    optimizer = trainer.optimizers[0]
    assert type(optimizer).__name__ == "Lookahead" and "RAdam" in type(optimizer._base_optimizer).__name__
    assert lrs[0] == pytest.approx(1e-4 + (0.01 - 1e-4) / 5)  # warmup rises from warmup_lr over 4 updates ...
    assert lrs[4] == pytest.approx(0.01)  # ... reaches lr after one epoch (4 updates) ...
    assert lrs[-1] == 0.0 and all(b <= a + 1e-12 for a, b in zip(lrs[4:], lrs[5:]))  # ... cosine ends at min_lr
    assert len(lrs) == 12 and not math.isnan(lrs[-1])


def test_unknown_names_are_clear():
    with pytest.raises(KitError, match="model.name: unknown timm model 'no_such_net'"):
        _module(model={"name": "no_such_net"})
    module = _module(optim={"name": "no_such_opt"})
    with pytest.raises(KitError, match="optim.name"):
        _trainer(max_epochs=1).fit(module, DataLoader(_Synthetic(8), batch_size=8))


def test_step_seeded_randomness_is_a_function_of_the_step():
    module = _module(model={"drop_rate": 0.5}, data={"aug": {"hflip": True, "vflip": True, "transpose": True}})
    module.train()
    augment = GpuAugment(module.recipe.stages.gpu)
    batch = {"image": _Synthetic(8).images}
    outs = []
    for _ in range(2):
        torch.manual_seed(123)  # what StepSeed's on_train_batch_start does with step_seed(...)
        outs.append(module(augment.augment(batch["image"])))
    assert torch.equal(outs[0], outs[1])


def test_quiet_lightning_keeps_the_resume_news(caplog):
    import logging

    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    from kitpkg.train.trainer import quiet_lightning

    quiet_lightning()
    quiet_lightning()  # idempotent: one filter however often a trainer is built
    with caplog.at_level("INFO"):
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("Restored all states from the checkpoint at /run/fold0/ckpt/ckpt-00000004-0.ckpt")
        logging.getLogger("pytorch_lightning.utilities.rank_zero").warning("a real problem")
    text = caplog.text
    assert "GPU available" not in text  # chatter: setup() printed the hardware already
    assert "Restored all states from the checkpoint at /run/fold0" in text  # a crashed fold resumed: the user sees it
    assert "a real problem" in text
