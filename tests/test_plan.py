"""`kitpkg plan`: real training steps of the tiny test model on the CPU, their figures printed and stored in plan.json
(the projection following projection.py's formula from them), nothing else written into the run directory, sizes
the shard set lacks refused, `kitpkg runs` showing the projection beside a finished run's fold time; the batch-size
search as a pure function and once through its child process."""
from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import pytest

from conftest import write_train_config
from kitpkg.cli import main
from kitpkg.train.projection import FoldShape, Measured, fold_seconds, largest_fitting

STEPS = ["--steps", "3"]  # a few steps keep each plan at seconds on the tiny model


# -- the batch-size search, on a fake "does it fit" --------------------------------------------------------------------
@pytest.mark.parametrize("start", [1, 8, 64, 300])
def test_largest_batch_found_within_an_eighth_by_doubling_then_bisecting(start):
    for largest in [1, 2, 3, 7, 8, 9, 20, 63, 64, 65, 100, 255, 700]:
        tried = []

        def fits(batch, largest=largest):
            tried.append(batch)
            return batch <= largest

        found, at_limit = largest_fitting(fits, start, 1024)
        assert not at_limit and found is not None and found <= largest
        assert largest - found <= max(1, found // 8), (start, largest, found)
        assert len(tried) <= 2 * 11 and len(set(tried)) == len(tried)  # logarithmic, never the same size twice


def test_batch_search_stops_at_its_limit_or_when_nothing_fits():
    assert largest_fitting(lambda b: True, 8, 100) == (100, True)
    assert largest_fitting(lambda b: False, 8, 100) == (None, False)


def test_fold_time_is_epochs_times_the_oversampled_epoch_plus_validation_checkpoints_and_tta():
    m = Measured(image_size=64, batch_size=8, steps=3, train_img_s=10.0, loader_wait=0.1, loader_img_s=100.0,
                 eval_img_s=40.0, peak_bytes=1, peak_of="GPU", device="T4 (sm 7.5)", precision="16-mixed",
                 ckpt_bytes=1000, ckpt_s=0.5, startup_s=2.0)
    shape = FoldShape(fold=0, epoch_images=120, shard_images=100, batches=15, val_images=40, test_images=20)
    parts = fold_seconds(m, shape, epochs=3, views=2, accumulate=1, every_n_steps=10, world=1)
    assert parts["start-up"] == 2.0  # once per fold
    assert parts["train"] == pytest.approx(3 * 120 / 10.0)
    assert parts["validation"] == pytest.approx(3 * 40 / 40.0)
    assert parts["checkpoints"] == pytest.approx((45 // 10 + 2 * 3) * 0.5)  # every 10 steps + end of epoch + best
    assert parts["predictions"] == pytest.approx((40 + 20) * 2 / 40.0)  # OOF and test, each TTA view
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    ddp = fold_seconds(m, shape, epochs=3, views=2, accumulate=1, every_n_steps=10, world=2)
    assert ddp["train"] == pytest.approx(parts["train"] / 2)


# -- real steps on the CPU --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oversampled_plan(tmp_path_factory, tfrecord_manifest):
    """(printed text, plan.json, run dir, config path) of `kitpkg plan` with positives repeated 3 times."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("plan")
    config = write_train_config(folder, tfrecord_manifest)
    run_dir = folder / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--config", str(config), "--run-dir", str(run_dir), *STEPS,
                     "--set", "data.sampling.class_weights={1: 3}"]) == 0
    return out.getvalue(), json.loads((run_dir / "plan.json").read_text()), run_dir, config


def test_plan_prints_rates_memory_and_the_projection(oversampled_plan):
    text, plan, _, _ = oversampled_plan
    entry = plan["sizes"]["64"]
    m = entry["measured"]
    assert 0 < m["train_img_s"] < 1e5 and 0 < m["eval_img_s"] < 1e6 and 0 <= m["loader_wait"] <= 1
    assert m["loader_img_s"] > 0 and m["steps"] == 3 and m["batch_size"] == 8 and m["device"] == "CPU"
    assert 50e6 < m["peak_bytes"] < 64e9 and m["peak_of"] == "CPU process RSS"  # the process's RSS, said so
    assert not re.search(r"epoch \d+/\d+:", text)  # its timed validation passes print no training-epoch lines
    assert m["ckpt_bytes"] > 10_000 and m["ckpt_s"] >= 0 and 0 < m["startup_s"] < 60
    for figure in (f"train: {m['train_img_s']:.1f} img/s", f"the loader alone: {m['loader_img_s']:.1f} img/s",
                   f"waiting for batches: {100 * m['loader_wait']:.0f}% of training time", "(CPU process RSS)",
                   "largest batch that fits: not searched on the CPU", "CV (3 folds, one after the other)",
                   "no session limit here", "5 checkpoints × "):
        assert figure in text, (figure, text)
    assert " epoch 1/" not in text  # the timing passes of validation print no training-epoch line


def test_projection_is_epochs_times_the_loaders_oversampled_epoch(oversampled_plan, fold_datamodule):
    from kitpkg.config import load_config

    text, plan, _, config_path = oversampled_plan
    entry = plan["sizes"]["64"]
    m = entry["measured"]
    config = load_config(config_path, overrides=["data.sampling.class_weights={1: 3}"])
    epochs = {k: fold_datamodule(config, k).train_dataloader().dataset.epoch_samples for k in (0, 1, 2)}
    for k, epoch in epochs.items():  # the loader's own epoch length, oversampled
        parts = entry["folds"][str(k)]
        assert parts["train"] == pytest.approx(config.train.epochs * epoch / m["train_img_s"])
        assert parts["total"] == pytest.approx(sum(v for key, v in parts.items() if key != "total"))
    assert f"fold 0: {config.train.epochs} epochs × {epochs[0]} images (oversampled from" in text
    assert entry["cv_s"] == pytest.approx(sum(f["total"] for f in entry["folds"].values()))
    assert entry["output_bytes"] == (3 + 2) * m["ckpt_bytes"]  # a best.ckpt per fold + the training fold's 2


def test_plan_writes_plan_json_and_nothing_else_into_the_run_directory(oversampled_plan):
    _, plan, run_dir, _ = oversampled_plan
    assert sorted(p.name for p in run_dir.rglob("*")) == ["plan.json"]  # no state.json, no checkpoints, no folds
    assert plan["image_size"] == 64 and len(plan["config_hash"]) == 64


def test_sizes_the_shard_set_lacks_are_refused_in_one_line(tfrecord_manifest, tmp_path, capsys):
    config = write_train_config(tmp_path, tfrecord_manifest)
    assert main(["plan", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--sizes", "64,128"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--sizes: 128 px not in the shard set" in err and "has 64" in err
    assert not (tmp_path / "run").exists()


def test_runs_shows_the_projected_fold_time_beside_the_actual(finished_run, tmp_path, capsys):
    from kitpkg.experiments.runs import compare, load_run
    from kitpkg.train.projection import duration

    config, run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)  # the session's run stays as other tests read it
    assert main(["plan", "--config", str(config), "--run-dir", str(copy), *STEPS]) == 0
    planned = json.loads((copy / "plan.json").read_text())["sizes"]["64"]["fold_s"]
    run = load_run(copy)
    actual = sum(r.wall_s for r in run.done.values()) / len(run.done)
    cell = compare([run])[0].cells()["fold plan/actual"]
    assert cell == f"{duration(planned)} / {duration(actual)}"
    capsys.readouterr()
    assert main(["runs", str(copy)]) == 0
    assert "fold plan/actual" in capsys.readouterr().out
    plan = json.loads((copy / "plan.json").read_text())
    plan["sizes"]["64"]["config_hash"] = "another config"
    (copy / "plan.json").write_text(json.dumps(plan))
    assert compare([load_run(copy)])[0].cells()["fold plan/actual"].startswith("– / ")  # planned for another config


# -- the GPU's paths, on the CPU --------------------------------------------------------------------------------------
def test_batch_search_runs_in_a_child_process(tfrecord_manifest, tmp_path):
    from kitpkg.config import load_config
    from kitpkg.train.child import call_in_child
    from kitpkg.train.plan_measure import search_batch

    config = load_config(write_train_config(tmp_path, tfrecord_manifest))
    assert call_in_child(search_batch, config, 0, 8) == (8, True)  # data.batch_size 8 trains: the limit is reached


def test_a_batch_size_that_does_not_fit_the_gpu_is_said_and_not_measured(tfrecord_manifest, tmp_path, monkeypatch,
                                                                        capsys):
    from kitpkg.train import child
    from kitpkg.train import plan as plan_module

    monkeypatch.setattr(plan_module, "uses_gpu", lambda config: True)
    monkeypatch.setattr(child, "call_in_child", lambda func, config, fold, limit: (4, False))
    monkeypatch.setattr(plan_module, "measure", lambda *a, **k: pytest.fail("measured a batch that does not fit"))
    config = write_train_config(tmp_path, tfrecord_manifest)
    assert main(["plan", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "data.batch_size 8 does not fit at 64 px (largest: 4)" in out
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["sizes"]["64"]["largest_batch"] == 4


@pytest.mark.parametrize("gpus", [[], ["0"]])
def test_nb_plan_keeps_cuda_out_of_the_notebook_process(tfrecord_manifest, tmp_path, monkeypatch, capsys, gpus):
    from kitpkg import notebook as nb
    from kitpkg.config import load_config
    from kitpkg.train import child, parallel
    from kitpkg.train import plan as plan_module

    calls = []
    fake = SimpleNamespace(summary=lambda: "the planned figures")
    monkeypatch.setattr(parallel, "visible_gpus", lambda config: gpus)
    monkeypatch.setattr(plan_module, "run_plan", lambda *a, **k: calls.append(("here", a, k)) or fake)
    monkeypatch.setattr(child, "call_in_child", lambda f, *a, **k: calls.append(("child", a, k)) or fake)
    config = load_config(write_train_config(tmp_path, tfrecord_manifest))
    assert nb.plan(config, sizes=[64], steps=5) is fake
    assert [(where, k) for where, _, k in calls] == [("child" if gpus else "here", {"sizes": [64], "steps": 5})]
    assert "the planned figures" in capsys.readouterr().out


def test_the_cv_is_held_against_the_session_budget_train_time_limit_sets(tfrecord_manifest, tmp_path):
    from kitpkg.config import load_config
    from kitpkg.train.plan import budget_limits
    from kitpkg.train.plan_text import session_verdict
    from kitpkg.train.projection import duration

    config = load_config(write_train_config(tmp_path, tfrecord_manifest), overrides=["train.time_limit=1h"])
    limit_s, _ = budget_limits(config)
    assert 3590 < limit_s <= 3600
    assert session_verdict(3000, 600, limit_s) == f"fits the {duration(limit_s)} left in this session"
    verdict = session_verdict(5 * 1000, 1000, 3600)
    assert "does NOT fit the 1:00:00 left" in verdict and "about 3 folds per session, 2 sessions" in verdict


def test_with_a_fold_per_gpu_the_cv_is_the_busiest_gpus_folds():
    """Kaggle's 2xT4: run_cv hands folds to two processes (parallel.gpus_for_folds), so the CV takes about half."""
    from kitpkg.train.plan import SizePlan
    from kitpkg.train.plan_text import session_verdict

    folds = {k: {"total": t} for k, t in enumerate([100.0, 100.0, 100.0, 100.0, 100.0])}
    assert SizePlan(384, "h", folds=folds).cv_s == 500
    two = SizePlan(384, "h", folds=folds, workers=2)
    assert two.cv_s == 300 and two.fold_s == 100  # folds 0, 2, 4 on one GPU, 1 and 3 on the other
    assert "about 4 folds per session" in session_verdict(two.cv_s, two.fold_s, 250, workers=2)


def test_each_size_of_the_shard_set_is_planned_with_its_own_config_hash(demo_source, tmp_path, capsys):
    from kitpkg.shards.convert import convert

    convert(demo_source.images, demo_source.train_csv, tmp_path / "shards", fmt="tfrecord", sizes=(48, 64), folds=3,
            test_csv=demo_source.test_csv, shard_samples=8, workers=1, progress=False)
    config = tmp_path / "exp.yaml"
    config.write_text(write_train_config(tmp_path, SimpleNamespace(root=tmp_path / "shards")).read_text()
                      .replace("image_size: 64", "image_size: 48"))
    assert main(["plan", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--sizes", "48,64",
                 "--steps", "2"]) == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["image_size"] == 48 and plan["config_hash"] == plan["sizes"]["48"]["config_hash"]
    assert plan["sizes"]["64"]["config_hash"] != plan["sizes"]["48"]["config_hash"]  # a run at 64 px finds its own
    assert [plan["sizes"][s]["measured"]["image_size"] for s in ("48", "64")] == [48, 64]
    rows = out[out.index("CV (session)"):].splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["48", "64"]


def test_out_of_memory_answers_a_smaller_batch_and_other_errors_are_raised(tfrecord_manifest, tmp_path, monkeypatch):
    import torch

    from kitpkg.config import load_config
    from kitpkg.train import plan_measure

    config = load_config(write_train_config(tmp_path, tfrecord_manifest))
    tried = []

    def fake_steps(recipe, meta, batch):
        tried.append(len(batch["id"]))
        assert batch["image"].shape[0] == len(batch["id"]) == len(batch["target"])  # one real batch, tiled
        if len(batch["id"]) > 20:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if len(batch["id"]) > 12:
            raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(plan_measure, "train_steps", fake_steps)
    found, at_limit = plan_measure.search_batch(config, 0, 64)
    assert (found, at_limit) == (12, False) and tried[:3] == [8, 16, 12]
    monkeypatch.setattr(plan_measure, "train_steps", lambda *a: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        plan_measure.search_batch(config, 0, 64)
