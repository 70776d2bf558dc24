"""The README's benchmark commands keep working: each script runs end to end on a tiny input and prints its ratios.

No figure is asserted (speed lives in the benchmarks, not in tests); the scripts' own logic is what is checked.
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _run(script, *args, cwd):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], cwd=cwd,
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES=""))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_loader_benchmark_prints_rates_ratios_and_memory(tmp_path):
    # 3 shards of the 256 the script writes per shard: webdataset needs a shard per worker
    out = _run("loader.py", "--data", str(tmp_path), "--n", "520", "--size", "64", "--out", "48", "--batch", "8",
               "--epochs", "2", cwd=tmp_path)
    for system in ("decode-limit", "files-pil", "webdataset", "tfrecord-pkg", "tf.data", "kitpkg", "kitpkg-wds"):
        assert re.search(rf"{re.escape(system)}:\s+[\d.]+ img/s", out), out
    assert re.search(r"kitpkg / best peer \([\w.-]+\): [\d.]+x", out), out
    assert re.search(r"kitpkg / decode limit: \d+%", out), out
    assert re.search(r"kitpkg on tars / decode limit: \d+%", out), out
    assert re.search(r"kitpkg per epoch: \d+, \d+ img/s; peak RSS .* growth epoch 1 -> 2: [+-][\d.]+%", out), out
    drift = r"single-core decode rate after each epoch: \d+, \d+/s; kitpkg per epoch / it: [\d.]+, [\d.]+"
    assert re.search(drift, out), out


def test_convert_benchmark_prints_both_converters_and_the_ratio(tmp_path):
    out = _run("convert.py", "--cache", str(tmp_path / "src"), "--n-mid", "6", "--n-big", "1", "--size", "64",
               cwd=tmp_path)
    row = r"typical PIL \+ ShardWriter +[\d.]+ img/s \| kitpkg convert +[\d.]+ img/s \| ratio +[\d.]+×"
    rows = re.findall(row, out)
    assert len(rows) == 2, out


def test_gpu_training_benchmark_smoke_runs_on_the_cpu(tmp_path):
    out = _run("train_gpu.py", "--device", "cpu", "--batch", "2", "--steps", "1", "--warmup", "0", "--size", "64",
               cwd=tmp_path)
    assert "fp32 eager NCHW" in out and re.search(r"× fp32 eager NCHW", out), out
    assert "auto recipe: CPU: 32-true" in out, out  # the choice and its reason, so a GPU run shows what auto picked
    without = _run("train_gpu.py", cwd=tmp_path)  # the default asks for a GPU: none here, a clear message, exit 0
    assert "no CUDA GPU here" in without


def test_augment_benchmark_prints_both_loaders_the_gpu_stage_and_the_ratio(tmp_path):
    out = _run("augment.py", "--data", str(tmp_path), "--n", "40", "--n-full", "16", "--size", "48", "--batch", "8",
               "--gpu-batches", "1", "--gpu-warmup", "0", "--rounds", "1", cwd=tmp_path)
    assert re.search(r"\(a\) kitpkg loader \+ isic CPU stage: +[\d.]+ img/s", out), out
    assert re.search(r"\(b\) plain Dataset \+ full 1st-place list on CPU: +[\d.]+ img/s", out), out
    assert re.search(r"\(c\) isic GPU stage on cpu: [\d.]+ ms per 8x48² batch", out), out
    assert re.search(r"\(a\)/\(b\): [\d.]+x \(target >= 5x\): (met|NOT met)", out), out


def test_tasks_benchmark_prints_kit_and_reference_cv_and_reports_a_failing_kit_run(tmp_path):
    score = r"[\d.]+ ± [\d.]+ \| [\d.]+"  # mean ± sd over folds | pooled OOF
    small = ["--n", "120", "--test", "20", "--folds", "2", "--epochs", "1", "--size", "16"]
    out = _run("tasks.py", "--work", str(tmp_path / "ok"), "--kinds", "binary", *small, cwd=tmp_path)
    assert re.search(rf"binary +auc ↑ +{score} +{score} +\d+ +[\d.]+", out), out
    assert re.search(rf"binary +pauc ↑ +{score} +{score}", out), out
    # a kit run that fails is a row naming the kit's error, beside the reference on the same folds; never a crash
    out = _run("tasks.py", "--work", str(tmp_path / "bad"), "--kinds", "multiclass", "--model", "no_such_net", *small,
               cwd=tmp_path)
    assert re.search(rf"multiclass +accuracy ↑ +not available yet: kitpkg cv: error: .*no_such_net.* {score}", out), out


def test_checkpoint_benchmark_prints_blocked_seconds_and_shares_before_and_after(tmp_path):
    out = _run("checkpoint.py", "--model", "test_efficientnet", "--rounds", "1", "--drive-mbps", "50",
               "--kit-patients", "30", "--kit-size", "32", "--kit-epochs", "1", "--kit-every", "2", "--kit-mbps", "0",
               "--work", str(tmp_path / "work"), cwd=tmp_path)
    assert re.search(r"\(a\) local torch.save: [\d.]+ s", out), out
    assert re.search(r"\(b\) copy to slow storage at 50 MB/s \(assumed Drive\): [\d.]+ s", out), out
    assert re.search(r"blocked per checkpoint: synchronous [\d.]+ s \| asynchronous [\d.]+ s", out), out
    share = r"synchronous [\d.]+ % \| asynchronous [\d.]+ % \(goal <= 2 %: (met|NOT met)\)"
    assert re.search(rf"isic_b4_384: every 200 steps .* share of training time blocked: {share}", out), out
    assert re.search(r"\(c\) tiny CPU run through the kit .* \d+ checkpoints; blocked per checkpoint: synchronous "
                     r"[\d.]+ s \| asynchronous [\d.]+ s; share of fit time: synchronous [\d.]+ % \| asynchronous "
                     r"[\d.]+ %", out), out
