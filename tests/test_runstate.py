"""Run state: one file per fold (two processes never lose each other's folds), run-level state written once, old
single-file run directories migrated, a run directory with nothing in it accepting a changed config."""
from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from kitpkg.config import config_from_dict
from kitpkg.errors import KitError
from kitpkg.rundir import STATE_NAME, FoldRecord
from kitpkg.task import make_task, task_of_outputs
from kitpkg.train.runstate import RunState

FINGERPRINTS = {"manifest": "abc", "num_classes": 1, "extra_train": []}


def _config(**optim):
    return config_from_dict({"data": {"shards": "/s"}, "optim": {"lr": 0.003, **optim}})


def _finish_folds(run_dir, folds, rounds):
    # what a `kitpkg cv --folds` process does to the state: open it, then update its own folds many times
    state = RunState.open(run_dir, _config(), FINGERPRINTS)
    for i in range(rounds):
        for k in folds:
            state.update_fold(k, status="running", step=i)
    for k in folds:
        state.update_fold(k, status="done", score=0.5 + k / 10)


def test_concurrent_processes_keep_every_fold(tmp_path):
    RunState.open(tmp_path, _config(), FINGERPRINTS)
    ctx = mp.get_context("fork")  # the children only write files
    procs = [ctx.Process(target=_finish_folds, args=(tmp_path, folds, 15)) for folds in ([0, 2], [1, 3])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    state = RunState.open(tmp_path, _config(), FINGERPRINTS)
    assert state.done_folds() == [0, 1, 2, 3]
    assert {k: r.score for k, r in state.folds().items()} == {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8}
    assert "folds" not in json.loads((tmp_path / STATE_NAME).read_text())  # fold progress never rewrites state.json


def test_a_fold_finished_by_another_process_is_seen_at_once(tmp_path):
    mine = RunState.open(tmp_path, _config(), FINGERPRINTS)
    other = RunState.open(tmp_path, _config(), FINGERPRINTS)
    other.update_fold(1, status="done", score=0.7)
    mine.update_fold(0, status="done", score=0.6)
    mine.set("cv", {"mean": 0.65})
    assert mine.is_done(1) and other.is_done(0) and other.done_folds() == [0, 1]
    other.set("shards", "../s")  # run-level entries: re-read before writing, so neither is lost
    assert RunState.read(tmp_path).get("cv") == {"mean": 0.65} and RunState.read(tmp_path).get("shards") == "../s"


def test_old_single_file_state_is_migrated(tmp_path):
    config = _config()
    RunState.open(tmp_path, config, FINGERPRINTS)
    data = json.loads((tmp_path / STATE_NAME).read_text())
    data.update(kitpkg_state=1, folds={"0": {"status": "done", "score": 0.9}, "1": {"status": "running"}})
    (tmp_path / STATE_NAME).write_text(json.dumps(data))  # what the previous version wrote
    state = RunState.open(tmp_path, config, FINGERPRINTS)
    assert state.done_folds() == [0] and state.fold(1) == FoldRecord(status="running")
    assert json.loads((tmp_path / "folds" / "fold0.json").read_text()) == {"status": "done", "score": 0.9}
    assert "folds" not in json.loads((tmp_path / STATE_NAME).read_text())


def test_changed_config_refused_only_when_there_is_work_to_lose(tmp_path):
    state = RunState.open(tmp_path, _config(), FINGERPRINTS)
    state.update_fold(0, status="running")  # a first run that failed before its first checkpoint
    state = RunState.open(tmp_path, _config(lr=0.01), FINGERPRINTS)  # nothing to lose: accepted, restarted
    assert state.get("config")["optim.lr"] == 0.01 and state.fold_ids() == []
    (tmp_path / "fold0" / "ckpt").mkdir(parents=True)
    (tmp_path / "fold0" / "ckpt" / "ckpt-00000002-0.ckpt").write_bytes(b"PK")
    with pytest.raises(KitError, match=r"another config \(optim.lr: 0.01 -> 0.02\)"):
        RunState.open(tmp_path, _config(lr=0.02), FINGERPRINTS)
    with pytest.raises(KitError, match="run on other data"):
        RunState.open(tmp_path, _config(lr=0.01), {**FINGERPRINTS, "manifest": "other"})


def test_run_dir_that_is_a_file_and_a_damaged_fold_record(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KitError, match="the run directory is a file"):
        RunState.open(tmp_path / "afile", _config(), FINGERPRINTS)
    state = RunState.open(tmp_path / "run", _config(), FINGERPRINTS)
    state.fold_path(2).parent.mkdir(parents=True, exist_ok=True)
    state.fold_path(2).write_text("{cut")
    with pytest.raises(KitError, match=r"fold2.json: unreadable run state .* delete it"):
        state.fold(2)


def test_a_run_scoring_one_class_of_many_is_scored_by_auc():
    """report.md, `kitpkg runs` and `kitpkg blend` call a train.score_class run binary (AUC), not accuracy -- also
    for a run directory made before state.json recorded the task (read from num_classes and train.score_class)."""
    def task(entries):
        return RunState("unused", entries).task

    assert task({"data": {"num_classes": 1}, "config": {}}).scoring.label == "AUC"
    one_of_many = task({"data": {"num_classes": 9}, "config": {"train.score_class": "melanoma"}})
    assert one_of_many.scored_binary and one_of_many.metric == "auc" and one_of_many.kind == "multiclass"
    plain = task({"data": {"num_classes": 9}, "config": {"train.score_class": None}})
    assert not plain.scored_binary and plain.scoring.label == "accuracy" and plain.outputs == 9


def test_the_task_is_recorded_and_an_old_run_directory_gets_it_on_open(tmp_path):
    recorded = make_task("multiclass", 4, ["diagnosis"], ["a", "b", "c", "d"], "b", 1)
    state = RunState.open(tmp_path / "new", _config(), FINGERPRINTS, task=recorded)
    assert RunState.read(tmp_path / "new").task == recorded
    old = RunState.open(tmp_path / "old", _config(), {**FINGERPRINTS, "num_classes": 4})  # as kitpkg made them before
    entries = json.loads(old.path.read_text())
    assert "task" not in entries
    assert RunState.read(tmp_path / "old").task == task_of_outputs(4)  # read as it is: nothing written
    assert json.loads(old.path.read_text()) == entries
    reopened = RunState.open(tmp_path / "old", _config(), {**FINGERPRINTS, "num_classes": 4}, task=recorded)
    assert reopened.config_hash == state.config_hash and RunState.read(tmp_path / "old").task == recorded
    assert {k: v for k, v in json.loads(old.path.read_text()).items() if k != "task"} == entries