"""A diverged run is a failed run: a non-finite loss stops the fold with one line naming fold, epoch, batch and the
likely cause; no checkpoint after it is written and the fold is never done; no NaN reaches an OOF, a test prediction
or a submission. The per-step bookkeeping (epoch loss, the guard) never syncs the device."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from kitpkg.config import Config, OutputConfig, load_config
from kitpkg.errors import KitError
from kitpkg.task import task_of_outputs
from kitpkg.train import predict as P
from kitpkg.train.checkpoint import load_checkpoint, resumable
from kitpkg.train.cv import run_cv
from kitpkg.train.decisions import submission_of
from kitpkg.train.divergence import DivergenceGuard
from kitpkg.train.runstate import RunState

from conftest import write_train_config
from test_model import _module


def test_a_diverging_fold_stops_is_not_done_and_keeps_only_good_checkpoints(tmp_path, tfrecord_manifest):
    """A learning rate far too high used to finish "done" with AUC 0.5 and an empty submission (the issue's lr 1e4
    makes base.yaml's model NaN; this tiny one needs 1e8 to overflow within its 4 updates)."""
    config = load_config(write_train_config(tmp_path, tfrecord_manifest),
                         ["optim.lr=1e8", "train.epochs=1", "data.folds=[0]"])
    run_dir = tmp_path / "run"
    with pytest.raises(KitError, match=r"fold 0: training diverged: the weights became non-finite by update 2; "
                                       r"likely the learning rate: lower optim.lr \(now 1e\+08\)"):
        run_cv(config, run_dir)
    assert RunState.read(run_dir).fold(0).status == "running"  # never "done"
    assert not list(run_dir.glob("oof*.csv")) and not (run_dir / "submission.csv").exists()
    for path in resumable(run_dir / "fold0" / "ckpt"):  # whatever was written holds finite weights
        weights = load_checkpoint(path)["state_dict"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), path


def test_non_finite_metadata_is_named_as_the_cause(tmp_path):
    module = _module()
    guard = DivergenceGuard(fold=2, lr=0.003)
    trainer = SimpleNamespace(current_epoch=1, global_step=7, world_size=1, sanity_checking=False,
                              callback_metrics={})
    meta = torch.tensor([[0.5, math.inf]])
    guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(0.7)}, {"meta": meta}, 3)
    guard.check(trainer, module)  # finite so far
    guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(math.nan)}, {"meta": meta}, 4)
    guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(math.nan)}, {"meta": meta}, 5)
    with pytest.raises(KitError, match=r"fold 2: .* non-finite at epoch 1, batch 4 \(update 7\); that batch's "
                                       r"metadata holds a non-finite value: check the model.meta columns"):
        guard.on_save_checkpoint(trainer, module, {})  # before the checkpoint is written


def test_non_finite_weights_stop_the_checkpoint():
    module = _module()
    guard = DivergenceGuard(fold=0)
    trainer = SimpleNamespace(current_epoch=0, global_step=4, world_size=1)
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] = math.nan
    with pytest.raises(KitError, match=r"fold 0: training diverged: the weights became non-finite by update 4"):
        guard.on_save_checkpoint(trainer, module, {})


class _NoSync:
    """Tensor methods that copy a value to the host (a device sync on a GPU) raise while active."""

    NAMES = ("item", "__float__", "__bool__", "tolist", "__int__")

    def __enter__(self):
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}

        def refuse(*_args, **_kw):
            raise AssertionError("a device sync in the training step")

        for name in self.NAMES:
            setattr(torch.Tensor, name, refuse)

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(torch.Tensor, name, fn)


def test_training_steps_keep_the_epoch_loss_on_the_device_exactly():
    """float(loss) in every step synced the GPU; the running sum stays a device tensor, exact (float64) across a
    checkpoint round trip, converted only when saved or reported."""
    module = _module()
    guard = DivergenceGuard(fold=0)
    trainer = SimpleNamespace(current_epoch=0, global_step=0, world_size=1)
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen),
                "target": torch.tensor([1.0, 0.0, 1.0, 0.0]), "id": [f"s{i}" for i in range(4)]} for _ in range(3)]
    losses = []
    for i, batch in enumerate(batches[:2]):
        with _NoSync():
            loss = module.training_step(batch, i)
            guard.on_train_batch_end(trainer, module, {"loss": loss}, batch, i)
        losses.append(float(loss))
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    saved = checkpoint["kitpkg_epoch_loss"]
    assert saved[0] == 0 and saved[2] == 8 and type(saved[1]) is float  # plain numbers: weights_only loading
    resumed = _module()
    resumed.load_state_dict(module.state_dict())
    resumed.on_load_checkpoint(checkpoint)
    last = [float(m.training_step(batches[2], 2)) for m in (module, resumed)]
    assert last[0] == last[1]
    assert resumed.train_loss_epoch() == module.train_loss_epoch()  # bit for bit across the round trip
    assert module.train_loss_epoch() == pytest.approx((losses[0] + losses[1] + last[0]) / 3, rel=1e-12)


@pytest.mark.parametrize("write", ["oof", "test", "submission"])
def test_writers_refuse_non_finite_values(tmp_path, write):
    frame = pd.DataFrame({"id": ["a", "b", "c"], "target": [1.0, 0.0, 1.0], "s0": [0.3, np.nan, 0.8]})
    with pytest.raises(KitError, match=r"1 of 3 (test predictions )?are not finite \(ids \['b'\]\)"):
        if write == "oof":
            P.oof_rows(frame, 0, task_of_outputs(1), space="prob")
        elif write == "test":
            P.average_test([frame.drop(columns="target")], task_of_outputs(1), space="prob")
        else:  # the submission of cv, predict and blend (train/decisions.py), refused before the file is written
            output = Config(output=OutputConfig(id_col="image_name", pred_col="target"))
            test = pd.DataFrame({"id": ["a", "b", "c"], "prediction": [0.1, np.inf, 0.5]})
            P.write_csv(submission_of(task_of_outputs(1), test, output), tmp_path / "submission.csv")
    assert not (tmp_path / "submission.csv").exists()
