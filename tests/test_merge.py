"""`kitpkg merge`: run directories of one config, trained on different machines, put together and finished without
retraining; a fold finished twice with different results is reported, another config refused by its keys.

Fast tests merge fake runs (tests/fakes/fake_runs.py: the kit's own writers, no training); the slow one splits a
real trained run into two directories and merges them back."""
from __future__ import annotations

import shutil
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from fakes.fake_runs import fake_config, fake_data, make_run
from kitpkg.cli import main
from kitpkg.config import to_yaml
from kitpkg.errors import KitError
from kitpkg.train.merge import merge_runs
from kitpkg.train.runstate import RunState


@pytest.fixture()
def split_runs(tmp_path):
    """(fake data, OOF, test scores, a single run of all 3 folds, run A with fold 0, run B with folds 1 and 2)."""
    fake = fake_data(60, k=3, n_test=10)
    rng = np.random.default_rng(0)
    oof, test = rng.random(60), rng.random((3, 10, 1))
    shards = tmp_path / "shards"
    single = make_run(tmp_path / "single", fake, oof, test, shards_dir=shards)
    a = make_run(tmp_path / "a", fake, oof, test, done=[0], shards_dir=shards)
    b = make_run(tmp_path / "b", fake, oof, test, done=[1, 2], shards_dir=shards)
    return fake, oof, test, single, a, b


def _merge(config, dirs, into=None):
    with mock.patch("kitpkg.train.report.write_report"):  # its plots cost seconds and are not what is tested
        return merge_runs(config, dirs, into)


def _csv(path):
    return pd.read_csv(path, dtype={"id": str})


def test_merge_of_two_directories_equals_a_single_run(split_runs, tmp_path):
    fake, _, _, single, a, b = split_runs
    result, conflicts = _merge(fake_config(tmp_path / "c", fake, shards_dir=tmp_path / "shards"), [a, b],
                               tmp_path / "c")
    merged = tmp_path / "c"
    assert conflicts == [] and not result.pending and result.scores.keys() == {0, 1, 2}
    for name in ("oof.csv", "submission.csv", "test_predictions.csv"):
        assert _csv(merged / name).equals(_csv(single / name)), name
    assert RunState.read(merged).done_folds() == [0, 1, 2]
    assert RunState.read(a).done_folds() == [0] and not (a / "oof.csv").exists()  # sources untouched
    # into the first directory by default
    result, _ = _merge(fake_config(a, fake, shards_dir=tmp_path / "shards"), [a, b])
    assert result.run_dir == a and _csv(a / "oof.csv").equals(_csv(single / "oof.csv"))


def test_a_fold_with_different_results_is_reported_not_overwritten(split_runs, tmp_path):
    fake, oof, test, _, a, b = split_runs
    other = oof.copy()
    other[fake.folds == 1] = 1 - other[fake.folds == 1]  # fold 1 trained again elsewhere, other numbers
    b2 = make_run(tmp_path / "b2", fake, other, test, done=[1, 2], shards_dir=tmp_path / "shards")
    kept = _csv(b / "oof_fold1.csv")
    _, conflicts = _merge(fake_config(a, fake, shards_dir=tmp_path / "shards"), [a, b, b2])
    assert len(conflicts) == 1  # fold 2 is the same in b and b2: no line for it
    assert conflicts[0].startswith("fold 1: ") and str(a) in conflicts[0] and str(b2) in conflicts[0]
    assert _csv(a / "oof_fold1.csv").equals(kept)


def test_cli_refuses_another_config_naming_the_key(split_runs, tmp_path, capsys):
    fake, oof, test, _, a, _ = split_runs
    lr = make_run(tmp_path / "lr", fake, oof, test, config={"optim.lr": 0.01}, done=[1, 2],
                  shards_dir=tmp_path / "shards")
    config = tmp_path / "exp.yaml"
    config.write_text(to_yaml(fake_config(a, fake, shards_dir=tmp_path / "shards")))
    assert main(["merge", str(a), str(lr), "--config", str(config), "--into", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "kitpkg merge: error: merge: " in err and "optim.lr: 0.01 -> 0.001" in err and str(lr) in err
    assert not (tmp_path / "c").exists()  # refused before anything was written
    with pytest.raises(KitError, match="no state.json here"):
        merge_runs(fake_config(a, fake, shards_dir=tmp_path / "shards"), [a, tmp_path / "nothing"])


def _keep_only(run_dir, keep):
    """Remove every fold but `keep` (and the merged outputs) from a copied run directory."""
    for k in {0, 1, 2} - set(keep):
        shutil.rmtree(run_dir / f"fold{k}")
        for name in (f"folds/fold{k}.json", f"oof_fold{k}.csv", f"test_fold{k}.csv"):
            (run_dir / name).unlink()
    for name in ("oof.csv", "submission.csv", "test_predictions.csv"):
        (run_dir / name).unlink()


@pytest.mark.slow
def test_merging_trained_folds_back_gives_the_run_and_its_checkpoints(finished_run, tmp_path, capsys):
    from kitpkg.train.checkpoint import load_checkpoint

    config_path, run_dir, _ = finished_run
    for name, keep in (("a", [0]), ("b", [1, 2])):
        shutil.copytree(run_dir, tmp_path / name)
        _keep_only(tmp_path / name, keep)
    merged = tmp_path / "merged"
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--config", str(config_path), "--into",
                 str(merged)]) == 0
    assert "CV auc" in capsys.readouterr().out
    for name in ("oof.csv", "submission.csv"):
        assert _csv(merged / name).equals(_csv(run_dir / name)), name
    assert load_checkpoint(merged / "fold2" / "ckpt" / "best.ckpt")["state_dict"]  # `kitpkg predict` has them
    assert (merged / "fold1" / "metrics.csv").read_bytes() == (run_dir / "fold1" / "metrics.csv").read_bytes()


@pytest.mark.parametrize("damage", ["missing", "empty", "cut", "no best.ckpt"])
def test_a_broken_source_fold_is_refused_in_one_line_and_the_target_stays_usable(split_runs, tmp_path, damage):
    fake, _, _, single, a, b = split_runs
    oof1 = b / "oof_fold1.csv"
    kept = oof1.read_bytes()
    if damage == "missing":
        oof1.unlink()
    elif damage == "empty":
        oof1.write_bytes(b"")
    elif damage == "cut":  # a sync cut short: the header and the first rows only
        oof1.write_bytes(b"\n".join(kept.splitlines()[:4]) + b"\n")
    else:
        (b / "fold1" / "ckpt" / "best.ckpt").unlink()
    config = fake_config(tmp_path / "c", fake, shards_dir=tmp_path / "shards")
    with pytest.raises(KitError, match=rf"merge: {b}: fold 1 cannot be merged: .*; .*") as err:
        _merge(config, [a, b], tmp_path / "c")
    assert "\n" not in str(err.value)
    assert RunState.read(tmp_path / "c").done_folds() == []  # nothing recorded: every fold is checked first
    if damage == "no best.ckpt":
        shutil.copy(a / "fold0" / "ckpt" / "best.ckpt", b / "fold1" / "ckpt" / "best.ckpt")
    else:
        oof1.write_bytes(kept)
    result, _ = _merge(config, [a, b], tmp_path / "c")  # the source repaired: the same target merges
    assert not result.pending and _csv(tmp_path / "c" / "oof.csv").equals(_csv(single / "oof.csv"))


def test_a_fold_being_trained_in_the_target_is_not_merged_under_it(split_runs, tmp_path):
    import json
    import time

    fake, _, _, _, a, b = split_runs
    target = tmp_path / "c"
    lease = target / "folds" / "fold2.lease"  # `kitpkg cv --folds 2` on another machine sharing the folder
    lease.parent.mkdir(parents=True)
    lease.write_text(json.dumps({"host": "colab-7f3a", "pid": 4242, "token": "t", "heartbeat": time.time()}))
    with pytest.raises(KitError, match=r"fold 2 is being trained by colab-7f3a pid 4242"):
        _merge(fake_config(target, fake, shards_dir=tmp_path / "shards"), [a, b], target)
    assert RunState.read(target).done_folds() == [] and not (target / "fold0").exists()


def _merge_in_child(config, dirs, into, delay):
    import time

    import kitpkg.train.merge as M
    from kitpkg.fsutil import atomic_write

    def slow_copy(src, dest):  # a slow Drive: each copy's temp file lives a while, the two processes overlap
        with atomic_write(dest) as out:
            time.sleep(delay)
            out.write(open(src, "rb").read())

    M.atomic_copy = slow_copy
    _merge(config, dirs, into)


def test_two_merges_into_one_target_at_once_keep_every_fold_whole(split_runs, tmp_path):
    import multiprocessing as mp

    from kitpkg.train.checkpoint import load_checkpoint

    fake, _, _, single, a, b = split_runs
    target = tmp_path / "c"
    config = fake_config(target, fake, shards_dir=tmp_path / "shards")
    for k in (0, 1, 2):  # each fold holds more than its best.ckpt, as a real one does
        for name in ("metrics.csv", "ckpt/ckpt-00000004-1.ckpt"):
            src = (a if k == 0 else b) / f"fold{k}" / name
            src.write_bytes((src.parent / "best.ckpt").read_bytes() if name.endswith(".ckpt") else b"epoch\n1\n")
    import subprocess
    import sys

    from kitpkg.rundir import RunDir
    from kitpkg.train.merge import _host

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = RunDir(target).merge_stage(f"{_host()}-{dead.pid}-0a1b2c") / "1" / "fold1"  # a merge killed while copying
    stale.mkdir(parents=True)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_merge_in_child, args=(config, [a, b], target, delay))
             for delay in (0.03, 0.05)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = RunState.read(target)
    assert state.done_folds() == [0, 1, 2]
    for k in (0, 1, 2):
        assert sorted(p.name for p in (target / f"fold{k}" / "ckpt").iterdir()) == ["best.ckpt",
                                                                                    "ckpt-00000004-1.ckpt"]
        assert load_checkpoint(target / f"fold{k}" / "ckpt" / "best.ckpt")["state_dict"]
    assert _csv(target / "oof.csv").equals(_csv(single / "oof.csv"))
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no staging folder left, nor a killed one's
