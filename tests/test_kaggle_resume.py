"""A Kaggle session that dies: its run directory, attached as (read-only) input to a new session, is copied back into
/kaggle/working (verified, atomically) and continued; a changed config is refused; nothing is written under input."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
from nbclient.exceptions import DeadKernelError

from fakes import notebooks as N
from fakes.fake_env import fake_platform_env
from killhook.kill_at import kill_environ
from kitpkg.notebook import bootstrap
from kitpkg.notebook.attached import find_attached
from kitpkg import notebook as nb
from kitpkg.errors import KitError
from kitpkg.notebook import restore
from kitpkg.train.runstate import RunState

# batch 2, a checkpoint every 2 steps: the kill after fold 1's step 5 is mid-epoch, after its step-4 checkpoint
TINY = dict(IMAGE_SIZE=32, PATIENTS=8, FOLDS=2, LR_STEPS=5,
            OVERRIDES=["train.epochs=1", "data.batch_size=2", "data.num_workers=0", "train.checkpoint_every_n_steps=2",
                       "model.name=test_resnet"])


def _snapshot(root: Path):
    """Every path under root with its size, mtime and mode: what 'nothing written there' is checked against."""
    return sorted((str(p.relative_to(root)), p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
                  for p in [root, *root.rglob("*")])


def _read_only(root: Path, on: bool = True) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) if on else mode | stat.S_IWUSR)


def _config(tmp_path, **over):
    env = bootstrap.Environment(platform="kaggle", project="p", run_dir=tmp_path / "working" / "runs",
                                data_dir=tmp_path / "data", scratch_dir=tmp_path / "tmp", cache_dir=None,
                                submit_dir=tmp_path / "working")
    return nb.experiment(env, tmp_path / "shards", "exp", overrides=[f"{k}={v}" for k, v in over.items()])


def _attached_run(tmp_path, config) -> Path:
    """A run directory with a finished fold 0 and a checkpoint of fold 1, as a read-only attached dataset."""
    run = tmp_path / "input" / "my-version-output" / "p" / "runs" / "exp"
    state = RunState.open(run, config, {})
    state.update_fold(0, status="done", score=0.9)
    state.update_fold(1, status="running")
    (run / "fold1" / "ckpt").mkdir(parents=True)
    (run / "fold1" / "ckpt" / "ckpt-00000004-0.ckpt").write_bytes(os.urandom(3000))
    (run / "oof_fold0.csv").write_text("id,fold,target,prediction\na,0,1,0.7\n")
    _read_only(tmp_path / "input")
    return run


@pytest.fixture
def unlock(tmp_path):
    yield
    if (tmp_path / "input").exists():
        _read_only(tmp_path / "input", on=False)  # so pytest can clean up


def test_attached_run_with_the_same_config_is_copied_and_verified(tmp_path, unlock, capsys):
    config = _config(tmp_path)
    source = _attached_run(tmp_path, config)
    before = _snapshot(tmp_path / "input")
    runs = find_attached(tmp_path / "input").runs
    assert runs == (source,)  # found by its state.json; its fold folders are not datasets of their own
    dest = Path(config.output.run_dir)
    assert restore.restore_run(dest, config, runs) == source
    assert "continuing the attached run" in capsys.readouterr().out
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    assert all((dest / f).read_bytes() == (source / f).read_bytes() for f in copied)
    assert (dest / "oof_fold0.csv").stat().st_mtime_ns == (source / "oof_fold0.csv").stat().st_mtime_ns
    assert all(os.access(p, os.W_OK) for p in [dest, *dest.rglob("*")])  # the read-only modes stay behind
    state = RunState.open(dest, config, {})  # what run_cv does next: the same config continues
    assert state.done_folds() == [0] and state.fold(1).status == "running"
    assert not list(dest.parent.glob(".*restore-*"))
    assert _snapshot(tmp_path / "input") == before
    assert restore.restore_run(dest, config, runs) is None  # the working copy now wins


def test_changed_config_is_refused_with_the_keys_and_others_are_ignored(tmp_path, unlock):
    source = _attached_run(tmp_path, _config(tmp_path))
    changed = _config(tmp_path, **{"train.epochs": 7})
    with pytest.raises(KitError, match=r"\(attached\) was run with another config \(train.epochs: \d+ -> 7\)"):
        restore.restore_run(changed.output.run_dir, changed, (source,))
    assert not Path(changed.output.run_dir).exists()
    other = changed.output.run_dir.replace("exp", "exp2")  # another experiment's name: the attached run is not its own
    assert restore.restore_run(other, changed, (source,)) is None and not Path(other).exists()


def test_a_plan_made_before_the_run_does_not_stop_the_attached_run_from_continuing(tmp_path, unlock):
    config = _config(tmp_path)
    source = _attached_run(tmp_path, config)
    dest = Path(config.output.run_dir)
    dest.mkdir(parents=True)
    (dest / "plan.json").write_text('{"made": "this session"}')  # `kitpkg plan` before `kitpkg cv`
    assert restore.restore_run(dest, config, (source,)) == source
    assert RunState.open(dest, config, {}).done_folds() == [0]
    assert json.loads((dest / "plan.json").read_text()) == {"made": "this session"}  # this session's plan kept
    (dest / "stray.txt").write_text("x")  # anything else still blocks a copy over it
    shutil.rmtree(dest / "folds")
    (dest / "state.json").unlink()
    assert restore.restore_run(dest, config, (source,)) is None


def test_a_bad_copy_leaves_no_run_directory(tmp_path, unlock, monkeypatch):
    config = _config(tmp_path)
    source = _attached_run(tmp_path, config)
    monkeypatch.setattr(restore, "sha256_file", lambda path: "0" * 64)  # what landed on disk differs from the source
    with pytest.raises(KitError, match="differs from it"):
        restore.restore_run(config.output.run_dir, config, (source,))
    parent = Path(config.output.run_dir).parent
    assert not Path(config.output.run_dir).exists() and not list(parent.glob(".*"))


def test_setup_on_kaggle_says_how_the_run_survives(tmp_path, monkeypatch):
    for run_type, expected in (("Interactive", "Persistence: Files"), ("Batch", "Save Version run")):
        environ = {"KAGGLE_KERNEL_RUN_TYPE": run_type, "KITPKG_KAGGLE_ROOT": str(tmp_path), "KITPKG_INTERNET": "0"}
        summary = bootstrap.setup("mel", environ=environ, quiet=True).summary()
        lines = [line for line in summary.splitlines() if "persistence" in line]
        assert lines and expected in " ".join(lines) and "attach" in " ".join(lines)
    local = bootstrap.setup("mel", environ={"KITPKG_PLATFORM": "local", "KITPKG_LOCAL_ROOT": str(tmp_path),
                                       "KITPKG_INTERNET": "0"}, quiet=True)
    assert "persistence" not in local.summary()


@pytest.mark.slow
def test_killed_kaggle_run_continues_from_its_attached_output(tmp_path):
    env = fake_platform_env("kaggle", tmp_path)
    kaggle = tmp_path / "kaggle"
    with pytest.raises(DeadKernelError):  # fold 0 finishes, fold 1 is SIGKILLed mid-epoch
        N.execute(N.load("kaggle.ipynb", parameters=TINY), kill_environ("1:5", env), tmp_path)
    first = kaggle / "working" / "demo" / "runs" / "demo"
    assert RunState.read(first).done_folds() == [0]
    # Save Version's output, attached to a new session: the whole of /kaggle/working, read-only under /kaggle/input
    output = kaggle / "input" / "kitpkg-demo-output"
    output.mkdir(parents=True)
    shutil.move(str(kaggle / "working" / "demo"), str(output / "demo"))
    shutil.rmtree(kaggle / "working")
    shutil.rmtree(kaggle / "temp", ignore_errors=True)
    attached = output / "demo" / "runs" / "demo"
    fold0 = {p.name: p.read_bytes() for p in (attached / "fold0" / "ckpt").glob("*.ckpt")}
    _read_only(kaggle / "input")
    before = _snapshot(kaggle / "input")
    try:
        out = N.text(N.execute(N.load("kaggle.ipynb", parameters=TINY), env, tmp_path))
        assert _snapshot(kaggle / "input") == before  # nothing written under input
    finally:
        _read_only(kaggle / "input", on=False)
    run = kaggle / "working" / "demo" / "runs" / "demo"
    assert f"continuing the attached run {attached}" in out
    resumed = re.findall(r"Restored all states from the checkpoint at (\S+)", out)
    assert resumed == [str(run / "fold1" / "ckpt" / "ckpt-00000004-0.ckpt")], out[-3000:]  # fold 1 mid-epoch
    assert {p.name: p.read_bytes() for p in (run / "fold0" / "ckpt").glob("*.ckpt")} == fold0  # fold 0 not retrained
    assert RunState.read(run).done_folds() == [0, 1]
    from kitpkg.shards.manifest import load_manifest

    manifest = load_manifest(output / "demo" / "data" / "demo-shards" / "32")  # the attached shards were used
    oof = pd.read_csv(run / "oof.csv")
    assert sorted(oof["id"]) == sorted(i for s in manifest.select("train") for i in s.ids)  # each exactly once
    assert len(pd.read_csv(kaggle / "working" / "submission.csv")) == manifest.num_samples("test")
    assert not json.dumps(sorted(p.name for p in run.rglob("*"))).count("restore-")


def test_kitpkg_cv_entry_walks_kaggle_input_only_on_kaggle(tmp_path, unlock):
    config = _config(tmp_path)
    source = _attached_run(tmp_path, config)
    local = {"KITPKG_PLATFORM": "local"}
    assert restore.restore_on_kaggle(config, environ=local) is None and not Path(config.output.run_dir).exists()
    kaggle = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KITPKG_KAGGLE_ROOT": str(tmp_path)}
    assert restore.restore_on_kaggle(config, environ=kaggle) == source
    assert (Path(config.output.run_dir) / "state.json").is_file()


def test_kitpkg_cv_command_restores_before_it_trains(tmp_path, monkeypatch):
    """`kitpkg cv` hands its config to restore_on_kaggle before run_cv opens the run directory."""
    import kitpkg.train.cv as cv_mod
    from kitpkg import cli

    calls = []
    monkeypatch.setattr(restore, "restore_on_kaggle", lambda config, run_dir: calls.append(("restore", run_dir)))

    class _Result:
        paused = False  # CVResult's: a run that did not stop at its session budget

        def summary(self):
            return "CV auc: 0.5"

    monkeypatch.setattr(cv_mod, "run_cv",
                        lambda config, run_dir, folds, **_: calls.append(("cv", run_dir)) or _Result())
    (tmp_path / "exp.yaml").write_text("data:\n  shards: shards\n")
    assert cli.main(["cv", "--config", str(tmp_path / "exp.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    assert calls == [("restore", str(tmp_path / "run")), ("cv", str(tmp_path / "run"))]
