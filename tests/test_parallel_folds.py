"""`kitpkg cv --parallel-folds N`: folds handed out to N worker processes (one GPU each, or sharing the CPU), one run
directory, the run finished by the parent -- the same OOF as folds trained one after another."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from kitpkg.config import config_from_dict
from kitpkg.errors import KitError
from kitpkg.train.parallel import run_workers, worker_environments
from kitpkg.train.runstate import RunState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**train):
    return config_from_dict({"data": {"shards": "unused"}, "train": train})


def test_one_gpu_per_worker_or_a_share_of_the_cores():
    envs = worker_environments(_config(), 2, ["2", "3"], environ={"PATH": "/bin"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3"] and envs[0]["PATH"] == "/bin"
    with pytest.raises(KitError, match=r"--parallel-folds 3: only 2 GPUs visible here \(2, 3\)"):
        worker_environments(_config(), 3, ["2", "3"], environ={})
    cpu = worker_environments(_config(accelerator="cpu"), 2, [], environ={})
    # on the CPU a worker keeps a sequential run's threads (fewer threads sum in another order: other OOF digits)
    assert len(cpu) == 2 and all("CUDA_VISIBLE_DEVICES" not in e and "OMP_NUM_THREADS" not in e for e in cpu)
    with pytest.raises(KitError, match="train.devices is 2"):
        worker_environments(_config(devices=2), 2, [], environ={})


def test_folds_go_to_free_workers_and_failures_are_collected(tmp_path):
    log = tmp_path / "log"
    script = ("import os, sys, time; k = int(sys.argv[1]); open(sys.argv[2], 'a').write(sys.argv[1] + ' ' + "
              "os.environ['SLOT'] + chr(10)); time.sleep(0.5 if k == 0 else 0); sys.exit(3 if k == 2 else 0)")
    envs = [{**os.environ, "SLOT": str(i)} for i in range(2)]
    failed = run_workers([0, 1, 2, 3], envs, lambda k: [sys.executable, "-c", script, str(k), str(log)])
    assert failed == {2: 3}  # the others still ran
    ran = dict(line.split() for line in log.read_text().splitlines())
    assert sorted(ran) == ["0", "1", "2", "3"] and ran["0"] != ran["1"]  # two at once, on different workers


@pytest.mark.slow
def test_parallel_folds_on_the_cpu_give_the_sequential_oof(finished_run, tmp_path):
    config_path, reference_dir, _ = finished_run
    run_dir = tmp_path / "parallel"
    env = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir",
                           str(run_dir), "--parallel-folds", "2", "--set", "train.accelerator=cpu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fold 0 -> worker 0" in proc.stdout and "fold 1 -> worker 1" in proc.stdout
    assert proc.stdout.count("over 3 folds") == 1  # the workers train a fold each; the parent finishes
    assert RunState.read(run_dir).done_folds() == [0, 1, 2]
    for name in ("oof.csv", "test_predictions.csv"):
        ours, reference = (pd.read_csv(d / name, dtype={"id": str}) for d in (run_dir, reference_dir))
        assert list(ours["id"]) == list(reference["id"])
        assert (ours["prediction"] - reference["prediction"]).abs().max() <= 1e-6, name
    assert (run_dir / "report.md").exists() and (run_dir / "submission.csv").exists()


def test_a_parent_stopped_early_stops_its_workers_and_what_they_started(tmp_path):
    # Ctrl-C in the parent (or an error in it): each worker's whole process group goes, its DataLoader workers too
    pids = tmp_path / "pids"
    script = ("import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(60)']); open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}'); "
              "time.sleep(60)")

    def argv_of(k):
        if k == 1:  # the second fold is handed out once the first worker and its child run: then Ctrl-C
            assert _wait_for(lambda: pids.exists() and pids.read_text(), 60)
            raise KeyboardInterrupt
        return [sys.executable, "-c", script, str(pids)]

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_workers([0, 1], [dict(os.environ), dict(os.environ)], argv_of)
    assert time.monotonic() - started < 30
    worker, child = map(int, pids.read_text().split())
    try:
        assert _wait_for(lambda: not _alive(worker) and not _alive(child), 10), "the worker and its child are gone"
    finally:
        for pid in filter(_alive, (worker, child)):
            os.kill(pid, signal.SIGKILL)


def _children(pid):
    """Pids of the live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parallel_parent_kills_its_workers(tfrecord_manifest, tmp_path):
    from conftest import write_train_config

    config_path = write_train_config(tmp_path, tfrecord_manifest)
    env = {**os.environ, "KITPKG_NO_PROGRESS": "1", "PYTHONPATH": REPO}
    parent = subprocess.Popen([sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir",
                               str(tmp_path / "run"), "--parallel-folds", "2", "--set", "train.accelerator=cpu"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        assert _wait_for(lambda: len(_children(parent.pid)) == 2, 120), "two workers started"
        workers = _children(parent.pid)
        parent.send_signal(signal.SIGKILL)  # the notebook cell interrupted hard, the terminal closed, an OOM kill
        parent.wait()
        assert _wait_for(lambda: not any(map(_alive, workers)), 20), "the workers died with their parent"
    finally:
        parent.kill()
        for pid in filter(_alive, workers):  # today's orphans (ppid 1) would train on
            os.kill(pid, signal.SIGKILL)
