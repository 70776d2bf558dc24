"""Crash test: the Colab notebook's training is SIGKILLed mid-epoch; running the same cells again resumes from the run
directory on (fake) Drive, not from scratch, and finishes with every OOF sample exactly once."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
from nbclient.exceptions import DeadKernelError

from fakes import notebooks as N
from fakes.fake_env import calls, fake_platform_env
from killhook.kill_at import kill_environ
from kitpkg.shards.manifest import load_manifest
from kitpkg.train.runstate import RunState

pytestmark = pytest.mark.slow

# batch 2 gives ~8 optimizer steps per epoch, a checkpoint every 2: the kill after step 5 is mid-epoch, after step 4's
TINY = dict(IMAGE_SIZE=32, PATIENTS=8, FOLDS=2, LR_STEPS=5,
            OVERRIDES=["train.epochs=1", "data.batch_size=2", "data.num_workers=0", "train.checkpoint_every_n_steps=2",
                       "model.name=test_resnet"])


def test_sigkill_mid_epoch_then_same_cells_resume_from_drive(tmp_path):
    env = fake_platform_env("colab", tmp_path)
    # the trainer's test hook SIGKILLs the kernel process itself after optimizer step 5 of fold 0: a real crash
    with pytest.raises(DeadKernelError):
        N.execute(N.load("colab.ipynb", parameters=TINY), kill_environ("0:5", env), tmp_path)
    run = tmp_path / "drive" / "MyDrive" / "demo" / "runs" / "demo"
    state = RunState.read(run)  # the run's state as kitpkg reads it (state.json and one record per fold)
    assert state.fold(0).status == "running" and 1 not in state.fold_ids()
    saved = sorted(p.name for p in (run / "fold0" / "ckpt").glob("ckpt-*.ckpt"))
    assert saved and saved[-1] == "ckpt-00000004-0.ckpt"  # "-0": written mid-epoch, before any validation
    assert not (run / "oof.csv").exists()

    shutil.rmtree(tmp_path / "content")  # a new runtime: Colab's local disk is empty, Drive keeps the run
    nb = N.execute(N.load("colab.ipynb", parameters=TINY), env, tmp_path)
    out = N.text(nb)
    resumed = re.findall(r"Restored all states from the checkpoint at (\S+)", out)
    assert resumed == [str(run / "fold0" / "ckpt" / "ckpt-00000004-0.ckpt")], out[-3000:]
    assert [c["call"] for c in calls(tmp_path / "colab-calls.jsonl")] == ["mount"]  # Drive still mounted: not again
    assert {k: v.status for k, v in RunState.read(run).folds().items()} == {0: "done", 1: "done"}
    manifest = load_manifest(tmp_path / "drive" / "MyDrive" / "demo" / "data" / "demo-shards" / "32")
    oof = pd.read_csv(run / "oof.csv")
    assert sorted(oof["id"]) == sorted(i for s in manifest.select("train") for i in s.ids)  # each exactly once
    assert oof.groupby("fold")["id"].apply(set).to_dict() == {
        k: {i for s in manifest.select("train", [k]) for i in s.ids} for k in (0, 1)}
