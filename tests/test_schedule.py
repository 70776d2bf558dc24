"""sched.*: every schedule fits exactly the updates of train.epochs, warmup included (pure grid), and a real fit
ends at min_lr at its last update (metrics.csv shows it), per update and per epoch."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from kitpkg.train.schedule import schedule_lrs, schedule_span

from test_model import _Synthetic, _config, _trainer


def _sched_config(name="cosine", epochs=3, warmup=1, per_update=True, lr=0.01):
    return _config(optim={"lr": lr}, sched={"name": name, "warmup_epochs": warmup, "warmup_lr": 1e-5,
                                           "min_lr": 1e-6, "per_update": per_update}, train={"epochs": epochs})


def _updates_per_epoch(samples, batch_size, world_size, accumulate):
    """Optimizer updates per epoch on each rank (the loader deals samples to ranks, Lightning steps the optimizer
    after `accumulate` batches and at the epoch's last batch)."""
    batches = -(-(samples // world_size) // batch_size)
    return -(-batches // accumulate)


@pytest.mark.parametrize("name", ["cosine", "tanh", "poly"])
def test_decay_ends_at_min_lr_exactly_at_the_last_update(name):
    grid = itertools.product([1, 2, 4, 15], [0, 1, 2], [(37, 8, 1, 1), (37, 8, 2, 1), (100, 8, 2, 3), (9, 4, 1, 1)])
    for epochs, warmup, (samples, batch, world, accumulate) in grid:
        per_epoch = _updates_per_epoch(samples, batch, world, accumulate)
        lrs = schedule_lrs(_sched_config(name, epochs, warmup), per_epoch)
        case = (name, epochs, warmup, samples, batch, world, accumulate)
        assert len(lrs) == epochs * per_epoch, case
        warm = min(warmup * per_epoch, len(lrs) - 1)
        if len(lrs) - warm >= 2:  # a decay of at least two steps: it starts at lr and ends at min_lr
            assert lrs[-1] == pytest.approx(1e-6, abs=1e-12), case
            assert lrs[warm] == pytest.approx(0.01), case
        assert max(lrs) == pytest.approx(0.01), case
        assert all(b <= a + 1e-15 for a, b in zip(lrs[warm:], lrs[warm + 1:])), case  # decays monotonically
        if warm:
            assert 1e-5 < lrs[0] < lrs[warm - 1] < 0.01, case  # warmup rises from above warmup_lr to below lr


@pytest.mark.parametrize("name", ["step", "multistep"])
def test_step_schedules_warm_up_inside_the_epochs(name):
    lrs = schedule_lrs(_sched_config(name, epochs=3, warmup=1), 5)
    assert len(lrs) == 15 and 1e-5 < lrs[0] < lrs[4] < lrs[5] == pytest.approx(0.01) == lrs[-1]  # 5 warmup updates


def test_per_epoch_schedule_never_spends_an_epoch_at_warmup_lr():
    lrs = schedule_lrs(_sched_config(epochs=4, warmup=1, per_update=False), 0)
    assert len(lrs) == 4
    assert lrs[0] == pytest.approx((1e-5 + 0.01) / 2)  # half way up, not warmup_lr
    assert lrs[1] == pytest.approx(0.01) and lrs[-1] == pytest.approx(1e-6)


def test_a_warmup_as_long_as_the_run_keeps_its_last_step_at_lr():
    span = schedule_span(epochs=1, warmup_epochs=1, steps_per_epoch=4)
    assert span.steps == 4 and span.position(3) == span.warmup_t  # step 3: the first (and only) decay step
    lrs = schedule_lrs(_sched_config(epochs=1, warmup=1), 4)
    assert lrs[-1] == pytest.approx(0.01) and lrs[0] > 1e-5


class _RecordLr(pl.Callback):
    """The LR each optimizer update uses."""

    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_fit_ends_at_min_lr_and_metrics_csv_shows_it(tmp_path):
    """40 samples, batches of 8, accumulate 2: 3 updates per epoch (the last one after a single batch), 2 epochs
    with a 1-epoch warmup."""
    from kitpkg.train.checkpoint import RunCheckpoints
    from tiny_module import module_of

    torch.manual_seed(0)
    config = _sched_config(epochs=2, warmup=1)
    record = _RecordLr()
    writer = RunCheckpoints(tmp_path / "ckpt", 1000, 2, "val_auc")
    trainer = _trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[record, writer])
    trainer.fit(module_of(config, 1), DataLoader(_Synthetic(40), batch_size=8),
                DataLoader(_Synthetic(16, seed=1), batch_size=8))
    lrs = record.lrs
    assert len(lrs) == 6
    assert lrs[0] > 1e-5  # the first epoch does not train at warmup_lr
    assert lrs[-1] == pytest.approx(1e-6)  # min_lr at the last update
    assert max(lrs) == pytest.approx(0.01)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["lr"].iloc[-1] == pytest.approx(1e-6)
