"""Which weights a finished fold predicts with: its best.ckpt, or -- only when it is missing and no validation metric was
ever finite, as its checkpoints record -- its last checkpoint, with a warning. A best.ckpt that should exist but is gone or damaged
is never replaced silently: `predict` refuses naming the fold, and the advice it prints (re-run `kitpkg cv`) works."""
from __future__ import annotations

import shutil
from unittest import mock

import pandas as pd
import pytest
import torch

from kitpkg.errors import KitError


def _ckpt(path, best):
    """A tiny checkpoint whose RunCheckpoints state records `best` (None: no finite metric yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": {"w": torch.ones(2)},
                "callbacks": {"RunCheckpoints": {"best": best, "best_epoch": None if best is None else 0}}}, path)
    return path


def test_the_last_checkpoint_stands_in_only_when_no_metric_was_ever_finite(tmp_path):
    from kitpkg.train.foldcheck import fold_weights

    last = _ckpt(tmp_path / "fold0" / "ckpt" / "ckpt-00000004-1.ckpt", None)
    with pytest.warns(RuntimeWarning, match=r"fold 0: no validation metric was ever finite and there is no "
                                            r"best.ckpt; predicting with its last checkpoint"):
        assert fold_weights(tmp_path, 0) == last
    _ckpt(tmp_path / "fold1" / "ckpt" / "ckpt-00000004-1.ckpt", 0.81)  # epoch 0 scored: best.ckpt was written
    with pytest.raises(KitError, match=r"fold 1: its best weights are gone \(.*best.ckpt is missing; epoch 0 scored "
                                       r"best\); re-run `kitpkg cv` .*: it trains fold 1 again"):
        fold_weights(tmp_path, 1)
    best = tmp_path / "fold2" / "ckpt" / "best.ckpt"
    _ckpt(tmp_path / "fold2" / "ckpt" / "ckpt-00000004-1.ckpt", 0.81)
    best.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(KitError, match=r"fold 2: its best weights are unusable .*; delete .*best.ckpt and re-run "
                                       r"`kitpkg cv`"):
        fold_weights(tmp_path, 2)  # never the last checkpoint instead


@pytest.mark.slow
def test_predict_refuses_a_fold_without_its_best_weights_and_its_advice_works(finished_run, tmp_path, capsys):
    from kitpkg.cli import main
    from kitpkg.train.runstate import RunState

    config_path, source, _ = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    (run_dir / "fold1" / "ckpt" / "best.ckpt").unlink()  # lost in a Drive sync; the last epoch's are still there
    args = ["--config", str(config_path), "--run-dir", str(run_dir)]
    assert main(["predict", *args, "--out", str(tmp_path / "sub.csv")]) == 2
    err = capsys.readouterr().err
    assert "fold 1: its best weights are gone" in err and "re-run `kitpkg cv`" in err
    assert not (tmp_path / "sub.csv").exists()  # never a submission from the last epoch's weights
    with mock.patch("kitpkg.train.report.write_report"):  # its plots cost seconds and are not what is tested
        assert main(["cv", *args]) == 0  # the advice, followed as written
    out = capsys.readouterr().out
    assert "fold 1 is recorded done but its best weights are gone" in out and "training it again" in out
    assert (run_dir / "fold1" / "ckpt" / "best.ckpt").is_file() and RunState.read(run_dir).is_done(1)
    assert main(["predict", *args, "--out", str(tmp_path / "sub.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "sub.csv")) == len(pd.read_csv(source / "submission.csv"))


def test_cv_reopens_a_done_fold_without_best_weights_or_oof_with_one_line(tmp_path, capsys):
    import numpy as np

    from fakes.fake_runs import fake_config, fake_data, make_run
    from kitpkg.train.cv import predict_test
    from kitpkg.train.foldcheck import LOST, reopen_lost_folds
    from kitpkg.train.runstate import RunState

    fake = fake_data(60, k=3, n_test=5)
    run_dir = make_run(tmp_path / "run", fake, np.random.default_rng(0).random(60), shards_dir=tmp_path / "shards")
    (run_dir / "fold1" / "ckpt" / "best.ckpt").write_bytes(b"PK\x03\x04 cut short")  # no zip directory: cut
    (run_dir / "oof_fold2.csv").unlink()  # what a merge of the earlier version could record as done
    state = RunState.read(run_dir)
    assert reopen_lost_folds(state) == [1, 2]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("kitpkg: fold 1 is recorded done but its best weights are gone (")
    assert out[1].startswith("kitpkg: fold 2 is recorded done but its OOF predictions are gone (")
    assert state.done_folds() == [0] and state.fold(1).status == LOST  # `kitpkg cv` trains them again
    assert reopen_lost_folds(state) == []
    with pytest.raises(KitError, match=r"fold 1: its best weights are gone \(.*\); re-run `kitpkg cv`"):
        predict_test(fake_config(run_dir, fake, shards_dir=tmp_path / "shards"), run_dir)  # never fold 0 alone
