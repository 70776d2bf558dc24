"""Resumable conversion: a real `kitpkg convert` killed with SIGKILL mid-run, re-run, equals an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kitpkg.shards.convert import convert
from kitpkg.shards.demo_data import make_demo_data

ROOT = Path(__file__).resolve().parents[1]


def _cmd(src, out, fmt):
    return [sys.executable, "-m", "kitpkg", "convert", str(src.images), str(src.train_csv), str(out), "--format", fmt,
            "--size", "64,256", "--folds", "3", "--shard-samples", "2", "--workers", "1", "--no-progress",
            "--test-csv", str(src.test_csv)]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    # 1024-px originals so a run lasts long enough to be killed part-way
    return make_demo_data(tmp_path_factory.mktemp("src"), n_patients=20, images_per_patient=4, n_test=6,
                          width=1024, height=768, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tfrecord", "wds"])
def test_sigkill_then_rerun_gives_the_same_bytes(tmp_path, big_source, fmt):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KITPKG_NO_PROGRESS": "1"}
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_cmd(big_source, ref, fmt), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_cmd(big_source, out, fmt), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shard_dir = out / "256"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(shard_dir.glob("train-*"))) < 3:
        assert proc.poll() is None, "conversion finished before it could be killed"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (shard_dir / "manifest.json").exists()
    reference = _files(ref)
    for name, data in _files(out).items():  # whatever has its final name is complete and right
        if not name.rsplit("/", 1)[-1].startswith("."):
            assert data == reference[name], name
    rerun = subprocess.run(_cmd(big_source, out, fmt), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "kept from an earlier run" in rerun.stderr
    got = {k: v for k, v in _files(out).items() if not k.rsplit("/", 1)[-1].startswith(".")}
    want = {k: v for k, v in reference.items() if not k.rsplit("/", 1)[-1].startswith(".")}
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want)
    assert not [k for k in _files(out) if k.endswith(".tmp")]


def test_damaged_or_missing_complete_shards_are_rewritten(tmp_path, demo_source, capsys):
    kw = dict(fmt="tfrecord", sizes=(32,), folds=3, shard_samples=8, workers=1, progress=False)
    m = convert(demo_source.images, demo_source.train_csv, tmp_path, **kw)[32]
    before = _files(tmp_path)
    damaged, removed = tmp_path / "32" / m.shards[0].file, tmp_path / "32" / m.shards[1].file
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    removed.unlink()
    (tmp_path / "32" / "manifest.json").unlink()
    capsys.readouterr()
    convert(demo_source.images, demo_source.train_csv, tmp_path, **kw)
    assert f"{len(m.shards) - 2} kept from an earlier run" in capsys.readouterr().err
    assert _files(tmp_path) == before


@pytest.mark.slow
def test_killing_convert_leaves_no_worker_processes_behind(tmp_path, big_source):
    """A SIGKILLed convert (a crashed notebook kernel) must not leave its pool workers waiting for work forever."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT), "KITPKG_NO_PROGRESS": "1"}
    cmd = _cmd(big_source, tmp_path / "out", "tfrecord")
    cmd[cmd.index("--workers") + 1] = "2"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 60, []
    while time.time() < deadline and not workers and proc.poll() is None:
        workers = psutil.Process(proc.pid).children()
        time.sleep(0.002)
    assert workers, "the pool never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphaned convert workers: {[p.pid for p in alive]}"
