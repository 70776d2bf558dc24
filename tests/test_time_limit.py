"""The session budget: train.time_limit parsed at load, the platforms' defaults (faked environments, /proc and
clocks), the pause decision, and a real CPU run that pauses at a limit of a few seconds, exits 0 and is continued to
the OOF of an uninterrupted run."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from kitpkg import env as kenv
from kitpkg.config import Config, config_from_dict, config_hash, to_yaml
from kitpkg.errors import KitError
from kitpkg.train import budget

HOUR = 3600.0
KAGGLE = {"KAGGLE_KERNEL_RUN_TYPE": "Batch"}
COLAB = {"COLAB_RELEASE_TAG": "release-colab_20260101"}
LOCAL = {"KITPKG_PLATFORM": "local"}


@pytest.mark.parametrize("written, seconds", [
    ("11h30m", 41400.0), ("90m", 5400.0), ("45s", 45.0), ("1h 5m 3s", 3903.0), ("2.5h", 9000.0), (45, 45.0),
    ("45", 45.0), (None, None), ("auto", None), ("off", 0.0), (False, 0.0), (0, 0.0)])
def test_time_limit_is_parsed_once_at_load_into_seconds(written, seconds):
    config = config_from_dict({"data": {"shards": "s"}, "train": {"time_limit": written}})
    assert config.train.time_limit == seconds
    again = config_from_dict(__import__("yaml").safe_load(to_yaml(config)))  # what a run directory stores reads back
    assert again.train.time_limit == seconds


@pytest.mark.parametrize("written", ["soon", "11h30", "1d", "h", "", True, -5, float("nan")])
def test_a_bad_time_limit_is_one_line_naming_the_key(written):
    with pytest.raises(KitError) as info:
        config_from_dict({"data": {"shards": "s"}, "train": {"time_limit": written}})
    message = str(info.value)
    assert message.startswith("train.time_limit:") and "\n" not in message


def test_the_time_limit_changes_no_result():
    plain = config_from_dict({"data": {"shards": "s"}})
    limited = config_from_dict({"data": {"shards": "s"}, "train": {"time_limit": "5s"}})
    assert config_hash(plain) == config_hash(limited)  # a paused run continues without the limit


def _proc(folder: Path, boot: float, pid_ticks: dict) -> Path:
    """A fake /proc: btime, and a stat line per pid started `ticks` clock ticks after boot (its name has spaces)."""
    folder.mkdir()
    (folder / "stat").write_text(f"cpu  1 2 3\nbtime {int(boot)}\nprocesses 9\n")
    for pid, ticks in pid_ticks.items():
        (folder / pid).mkdir()
        (folder / pid / "stat").write_text(f"{pid} (my (odd) name) S 0 1 1 0 -1 4194560 " + "0 " * 12
                                           + f"{ticks} 1000 200\n")
    return folder


def _limit(written, environ, now, proc):
    config = Config()
    config.train.time_limit = written
    return budget.session_limit_s(config, environ, now=now, proc=proc)


def test_kaggle_defaults_to_its_session_from_the_start_of_pid_1_less_the_margin(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    started = 1_000_000.0 + 100  # PID 1 began 100 s after boot
    proc = _proc(tmp_path / "proc", 1_000_000, {"1": 100 * tick, str(os.getpid()): 900 * tick})
    now = started + 2 * HOUR
    assert kenv.session_start("kaggle", now, KAGGLE, proc) == pytest.approx(started)
    assert _limit(None, KAGGLE, now, proc) == pytest.approx(10 * HOUR - kenv.KAGGLE_MARGIN_S)
    tpu = {**KAGGLE, "TPU_ACCELERATOR_TYPE": "v3-8"}
    assert _limit(None, tpu, now, proc) == pytest.approx(7 * HOUR - kenv.KAGGLE_MARGIN_S)
    assert _limit(11.5 * HOUR, KAGGLE, now, proc) == pytest.approx(9.5 * HOUR)  # set: from the same start, as is
    assert _limit(0.0, KAGGLE, now, proc) is None  # off
    assert _limit(None, KAGGLE, started + 13 * HOUR, proc) is not None  # PID 1 implausibly old: this process's start


def test_kaggle_without_a_readable_start_counts_from_now(tmp_path):
    proc = tmp_path / "nothing"
    assert _limit(None, KAGGLE, 5000.0, proc) == pytest.approx(12 * HOUR - kenv.KAGGLE_MARGIN_S)


def test_colab_and_local_have_no_default_and_count_a_set_limit_from_their_start(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    proc = _proc(tmp_path / "proc", 1_000_000, {"1": 0})
    now = 1_000_000.0 + HOUR
    assert _limit(None, COLAB, now, proc) is None and _limit(None, LOCAL, now, proc) is None
    assert _limit(3 * HOUR, COLAB, now, proc) == pytest.approx(2 * HOUR)  # the runtime started an hour ago
    assert _limit(3 * HOUR, LOCAL, now, proc) == pytest.approx(3 * HOUR)  # locally: from the run's start
    # a --parallel-folds worker counts from its parent's start, not its own (the parent sets KITPKG_RUN_START)
    worker = {**LOCAL, "KITPKG_RUN_START": repr(now - 0.5 * HOUR)}
    assert _limit(3 * HOUR, worker, now, proc) == pytest.approx(2.5 * HOUR)
    assert tick > 0


def test_output_limit_and_continue_hint_per_platform():
    assert budget.output_limit_bytes(KAGGLE) == 20 * 10**9 and budget.output_limit_bytes(LOCAL) is None
    assert budget.continue_hint("kitpkg cv --config a.yaml", LOCAL) == "`kitpkg cv --config a.yaml`"
    on_kaggle = budget.continue_hint(None, KAGGLE)
    assert "kitpkg.run_cv(config)" in on_kaggle and "attached as input" in on_kaggle


class _Trainer(SimpleNamespace):
    """What SessionBudget reads of a Lightning trainer; rank 0's decision is everyone's (broadcast)."""

    def __init__(self, batches=10, epoch=0):
        super().__init__(global_step=0, num_training_batches=batches, accumulate_grad_batches=1, num_val_batches=[4],
                         should_stop=False, limit_val_batches=1.0, max_epochs=5, current_epoch=epoch,
                         sanity_checking=False, strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))


class _Writer:
    every_n_steps = 50

    def __init__(self):
        self.saved = []

    def save_step(self, trainer):
        self.saved.append(trainer.global_step)


def _steps(callback, trainer, clock, seconds, batches):
    for batch_idx in batches:
        clock[0] += seconds
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None, None, None, batch_idx)
        if trainer.should_stop:
            return batch_idx


def test_pause_leaves_time_for_one_more_step_and_its_checkpoint():
    clock, writer, trainer = [0.0], _Writer(), _Trainer()
    callback = budget.SessionBudget(deadline=10.0, writer=writer, clock=lambda: clock[0])
    stopped = _steps(callback, trainer, clock, 1.0, range(9))  # a step a second
    # after step 8 (t=8) the next step and the pause's save would end at 10: the pause is now, saved at step 8
    assert stopped == 7 and writer.saved == [8] and callback.paused
    assert trainer.should_stop and trainer.limit_val_batches == 0  # no validation of a partial epoch


def test_before_an_epochs_last_step_its_validation_and_checkpoint_are_counted():
    clock, writer, trainer = [0.0], _Writer(), _Trainer(batches=5)
    callback = budget.SessionBudget(deadline=7.5, writer=writer, clock=lambda: clock[0])
    # 1 s steps: after batch 3 (t=4) the last step would end at 5, its validation (4 batches, not yet timed: ~2 s)
    # at 7, its checkpoint at 8: past 7.5, so the pause is now (one step alone would have fitted)
    stopped = _steps(callback, trainer, clock, 1.0, range(5))
    assert stopped == 3 and writer.saved == [4]


def test_never_a_pause_at_an_epochs_last_batch():
    clock, writer, trainer = [0.0], _Writer(), _Trainer(batches=2)
    callback = budget.SessionBudget(deadline=1.5, writer=writer, clock=lambda: clock[0])
    # past the deadline at the last batch (t=2): its checkpoint would resume as a finished epoch without its
    # validation, so the pause waits for the validation's checkpoint
    assert _steps(callback, trainer, clock, 1.0, range(2)) is None and writer.saved == [] and not callback.paused


def test_after_validation_the_writers_checkpoint_is_the_pause():
    clock, writer, trainer = [0.0], _Writer(), _Trainer(batches=2)
    callback = budget.SessionBudget(deadline=100.0, writer=writer, clock=lambda: clock[0])
    _steps(callback, trainer, clock, 1.0, range(2))
    callback.on_validation_start(trainer, None)
    clock[0] = 99.0
    callback.on_validation_end(trainer, None)
    assert callback.paused and trainer.should_stop and writer.saved == []  # its after-validation save stands
    ending, clock2 = _Trainer(batches=2, epoch=4), [0.0]  # the last epoch ends the fit anyway: no pause
    late = budget.SessionBudget(deadline=1.0, writer=_Writer(), clock=lambda: clock2[0])
    late.on_validation_start(ending, None)
    clock2[0] = 5.0
    late.on_validation_end(ending, None)
    assert not late.paused


@pytest.mark.slow
def test_a_cpu_run_pauses_at_its_limit_exits_0_and_continues_to_the_uninterrupted_oof(finished_run, tmp_path,
                                                                                       tfrecord_manifest, capsys):
    from kitpkg.cli import main
    from kitpkg.train.checkpoint import latest_intact
    from kitpkg.train.runstate import RunState

    config_path, reference_dir, _ = finished_run  # the same tiny config, run uninterrupted
    run_dir = tmp_path / "run"
    args = ["cv", "--config", str(config_path), "--run-dir", str(run_dir)]
    # a quarter of the uninterrupted run's fastest fold (its first paid the warm-up): fold 0 pauses in its fit
    limit = max(0.1, min(RunState.read(reference_dir).fold(k).wall_s for k in tfrecord_manifest.folds()) / 4)
    assert main([*args, "--set", f"train.time_limit={limit:.2f}s"]) == 0  # 0 would be "off"
    out = capsys.readouterr().out
    assert "paused before the session's end" in out and f"to continue: `kitpkg cv --config {config_path}" in out
    state = RunState.read(run_dir)
    folds = tfrecord_manifest.folds()
    statuses = {f: state.fold(f).status for f in folds}
    done = [f for f in folds if state.is_done(f)]
    assert done == [] and statuses[0] == "running", statuses
    assert latest_intact(run_dir / "fold0" / "ckpt") is not None  # the pause's complete checkpoint
    assert not any((run_dir / f"fold{f}").exists() for f in folds[1:])  # later folds not started
    assert not (run_dir / "oof.csv").exists()
    assert "**Partial**" in (run_dir / "report.md").read_text()

    assert main(args) == 0  # continued without the limit
    assert "paused" not in capsys.readouterr().out
    for name in ("oof.csv", "test_predictions.csv"):
        ours = pd.read_csv(run_dir / name, dtype={"id": str})
        reference = pd.read_csv(reference_dir / name, dtype={"id": str})
        assert list(ours["id"]) == list(reference["id"])
        assert (ours["prediction"] - reference["prediction"]).abs().max() <= 1e-6, name
    assert "**Partial**" not in (run_dir / "report.md").read_text()
    for f in folds:  # a finished fold keeps only the weights it predicts with
        assert sorted(p.name for p in (run_dir / f"fold{f}" / "ckpt").glob("*.ckpt")) == ["best.ckpt"]


def test_setup_rows_show_the_default_limit_and_the_output_size(tmp_path):
    from kitpkg.notebook.bootstrap import budget_rows

    run_dir = tmp_path / "working" / "p" / "runs"
    run_dir.mkdir(parents=True)
    (run_dir / "best.ckpt").write_bytes(b"0" * 3 * 10**8)
    kaggle = dict(budget_rows("kaggle", run_dir, tmp_path / "working", KAGGLE))
    assert kaggle["session"].startswith("12 h from") and "runs pause by" in kaggle["session"]
    assert kaggle["run dir size"] == f"0.3 GB; {tmp_path / 'working'} holds 0.3 GB of its 20 GB limit"
    assert dict(budget_rows("colab", run_dir, run_dir, COLAB))["session"].startswith("no known end: set train.time")
    assert dict(budget_rows("local", run_dir, run_dir, LOCAL)) == {"session": "no limit (train.time_limit sets one)",
                                                                  "run dir size": "0.3 GB"}


@pytest.mark.slow
def test_two_ddp_processes_pause_together_and_continue(finished_run, tmp_path):
    """2 gloo processes (the Kaggle 2xT4 path): rank 0's decision is every rank's, so the collective save and the
    stop happen on both (a rank left training would hang the run: the timeout fails it), and the run continues."""
    from conftest import run_ddp_cv
    from kitpkg.train.checkpoint import latest_intact
    from kitpkg.train.runstate import RunState

    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "ddp"
    # the processes start and join their group within the fit, after the budget is read: 1 s is gone by then
    paused = run_ddp_cv(config_path, run_dir, "train.epochs=1", "train.time_limit=1s", timeout=300)
    assert paused.returncode == 0, paused.stderr[-3000:]
    assert paused.stdout.count("paused before the session's end") == 1  # rank 0 reports
    state = RunState.read(run_dir)
    assert state.fold(0).status == "running" and latest_intact(run_dir / "fold0" / "ckpt") is not None
    continued = run_ddp_cv(config_path, run_dir, "train.epochs=1", timeout=300)
    assert continued.returncode == 0, continued.stderr[-3000:]
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    assert list(oof["id"]) == list(pd.read_csv(reference_dir / "oof.csv", dtype={"id": str})["id"])


def test_a_run_whose_budget_is_spent_begins_no_fold(tfrecord_manifest, tmp_path, monkeypatch):
    """Re-run in a session whose budget is gone (the cell run again after a pause): nothing starts, the run says
    how to continue."""
    import time

    from conftest import write_train_config
    from kitpkg.config import load_config
    from kitpkg.train import cv

    assert not budget.time_is_up(None) and not budget.time_is_up(time.monotonic() + 60)
    monkeypatch.setattr(cv, "run_deadline", lambda config: time.monotonic() - 1)
    monkeypatch.setattr("kitpkg.train.report.write_report", lambda run_dir, pending=(): run_dir / "report.md")
    result = cv.run_cv(load_config(write_train_config(tmp_path, tfrecord_manifest)), tmp_path / "run")
    assert result.paused and result.pending == tfrecord_manifest.folds() and not result.scores
    assert not list((tmp_path / "run").glob("fold*"))
    assert "to continue: run the notebook's cells again" in result.summary()


def test_parallel_workers_that_paused_leave_a_paused_run_and_the_notebook_cell_ends_cleanly(tfrecord_manifest,
                                                                                            tmp_path, monkeypatch):
    """One fold per GPU (the default on Kaggle's 2xT4): workers that paused exit 0 with their folds unfinished; the
    parent reports a paused run (partial report, how to continue), and nb.submit ends the Save Version without an
    error."""
    from conftest import write_train_config
    from kitpkg import notebook as nb
    from kitpkg.config import load_config
    from kitpkg.notebook.bootstrap import Environment
    from kitpkg.train import parallel

    handed = []
    monkeypatch.setattr(parallel, "run_workers", lambda todo, envs, argv_of: handed.extend(envs) or {})  # all paused
    config = load_config(write_train_config(tmp_path, tfrecord_manifest))
    result = parallel.run_parallel_cv(config, 2, tmp_path / "run")
    assert result.paused and result.pending == tfrecord_manifest.folds()
    assert len({e["KITPKG_RUN_START"] for e in handed}) == 1  # one start for every worker's budget
    assert "**Partial**" in (tmp_path / "run" / "report.md").read_text()
    assert "to continue:" in result.summary()
    env = Environment(platform="kaggle", project="p", run_dir=tmp_path, data_dir=tmp_path, scratch_dir=tmp_path,
                      cache_dir=None, submit_dir=tmp_path / "working")
    assert nb.submit(env, result) is None and not (tmp_path / "working").exists()
