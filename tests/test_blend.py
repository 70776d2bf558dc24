"""`kitpkg blend`: honest (nested) CV of fitted weights, complementary runs gain, the runs' output formats, refusals.

Run directories are written by tests/fakes/fake_runs.py through the kit's own writers (no training), except the one
slow test on real tiny runs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fakes.fake_runs import FakeData, fake_data, make_run
from kitpkg.cli import main
from kitpkg.errors import KitError
from kitpkg.experiments.blend import fit_weights, rank_auc, run_blend
from kitpkg.metrics import auc


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _test_preds(rng, n_test, folds=5):
    return rng.random((folds, n_test, 1))


def test_noise_runs_cannot_raise_the_nested_cv(tmp_path):
    data = fake_data(1000, seed=0, n_test=12)
    rng = np.random.default_rng(0)
    y = data.targets
    good = make_run(tmp_path / "good", data, _sigmoid(2 * y - 1 + rng.normal(0, 1.5, len(y))),
                    _test_preds(rng, 12))
    noise = [make_run(tmp_path / f"noise{i}", data, rng.random(len(y)), _test_preds(rng, 12)) for i in range(4)]
    summary = run_blend([good, *noise], tmp_path / "blend")
    fit, alone = summary["methods"]["fit"], summary["runs"][0]
    assert fit["in_sample_mean"] > alone["mean"]  # weights fitted on all OOF are optimistic ...
    assert fit["mean"] <= alone["mean"] + 0.005  # ... the nested score is not
    assert fit["weights"][0] > 0.7
    assert summary["methods"]["mean"]["mean"] < alone["mean"] - 0.05  # equal weights: the noise costs


def test_complementary_runs_beat_both(tmp_path):
    data = fake_data(1000, seed=1)
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(2, 1000))
    data.targets = (z1 + z2 + rng.normal(0, 0.3, 1000) > 1).astype(int)  # each run sees half of the signal
    a = make_run(tmp_path / "a", data, _sigmoid(z1 + rng.normal(0, 0.5, 1000)))
    b = make_run(tmp_path / "b", data, _sigmoid(z2 + rng.normal(0, 0.5, 1000)))
    summary = run_blend([a, b], tmp_path / "blend")
    best_single = max(r["mean"] for r in summary["runs"])
    for method in ("fit", "mean", "rank"):
        assert summary["methods"][method]["mean"] > best_single + 0.03, method
    assert (tmp_path / "blend" / "report.md").read_text().count("| run `") == 2


def test_outputs_have_the_runs_format(tmp_path):
    data = fake_data(200, seed=2, n_test=15)
    rng = np.random.default_rng(2)
    y = data.targets
    tests = [_test_preds(rng, 15), _test_preds(rng, 15)]
    runs = [make_run(tmp_path / f"r{i}", data, _sigmoid(2 * y - 1 + rng.normal(0, 1, 200)), tests[i],
                     config={"output.id_col": "image_id", "output.pred_col": "label"}) for i in range(2)]
    out = tmp_path / "blend"
    summary = run_blend(runs, out)
    oof, run_oof = pd.read_csv(out / "oof.csv"), pd.read_csv(runs[0] / "oof.csv")
    assert list(oof.columns) == list(run_oof.columns) and list(oof["id"]) == list(run_oof["id"])
    assert (oof["fold"] == run_oof["fold"]).all() and (oof["target"] == run_oof["target"]).all()
    sub, run_sub = pd.read_csv(out / "submission.csv"), pd.read_csv(runs[0] / "submission.csv")
    assert list(sub.columns) == ["image_id", "label"] and list(sub["image_id"]) == list(run_sub["image_id"])
    # the test blend: the runs' fold-averaged test predictions with the weights fitted on all OOF
    w = summary["methods"]["fit"]["weights"]
    expected = sum(wi * t.mean(axis=0)[:, 0] for wi, t in zip(w, tests))
    np.testing.assert_allclose(sub["label"], expected, rtol=1e-6)
    # the nested OOF scores as reported
    scores = [auc(g["target"], g["prediction"]) for _, g in oof.groupby("fold")]
    assert np.mean(scores) == pytest.approx(summary["methods"]["fit"]["mean"], abs=1e-6)
    run_blend(runs, out, method="rank")
    assert pd.read_csv(out / "submission.csv")["label"].between(0, 1).all()


def test_refuses_runs_on_other_folds_or_samples(tmp_path):
    data = fake_data(100, seed=3)
    rng = np.random.default_rng(3)
    a = make_run(tmp_path / "a", data, rng.random(100))
    moved = FakeData(data.ids, np.roll(data.folds, 1), data.targets)
    b = make_run(tmp_path / "b", moved, rng.random(100))
    with pytest.raises(KitError, match=r"a and .*b: different folds \(\d+ samples in other folds"):
        run_blend([a, b], tmp_path / "out")
    fewer = FakeData(data.ids[:90], data.folds[:90], data.targets[:90])
    c = make_run(tmp_path / "c", fewer, rng.random(90))
    with pytest.raises(KitError, match=r"different folds \(other samples \(10 only in the first"):
        run_blend([a, c], tmp_path / "out")
    partial = make_run(tmp_path / "partial", data, rng.random(100), done=[0, 1])
    with pytest.raises(KitError, match=r"partial: no oof.csv \(folds done \[0, 1\]\)"):
        run_blend([a, partial], tmp_path / "out")
    with pytest.raises(KitError, match="that is a run directory"):
        run_blend([a, partial], a)
    with pytest.raises(KitError, match="a run is given twice"):
        run_blend([a, tmp_path / "x" / ".." / "a"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_multiclass_blends_by_the_mean_and_refuses_fitting(tmp_path):
    rng = np.random.default_rng(4)
    data = FakeData([f"m{i}" for i in range(90)], np.arange(90) % 3, rng.integers(0, 3, 90))
    onehot = np.eye(3)[data.targets]
    runs = [make_run(tmp_path / f"r{i}", data, 0.4 * onehot + rng.dirichlet(np.ones(3), 90) * 0.6) for i in range(2)]
    with pytest.raises(KitError, match=r"--method fit: needs binary, multilabel, regression or soft runs .*; "
                                      r"multiclass runs blend with --method mean"):
        run_blend(runs, tmp_path / "out", method="fit")
    summary = run_blend(runs, tmp_path / "out")
    assert summary["method"] == "mean" and summary["metric"] == "accuracy"
    oof = pd.read_csv(tmp_path / "out" / "oof.csv")
    assert list(oof.columns) == list(pd.read_csv(runs[0] / "oof.csv").columns)  # prediction + prob_0..prob_2


def test_weight_search_is_deterministic_and_its_auc_is_the_kits():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    preds = np.round(rng.random((300, 3)) + 0.3 * y[:, None], 1)  # rounded: ties
    folds = np.arange(300) % 3
    assert rank_auc(y > 0, preds[:, 0]) == pytest.approx(auc(y, preds[:, 0]))
    w = fit_weights(preds, y, folds)
    assert w.min() >= 0 and w.sum() == pytest.approx(1)
    np.testing.assert_array_equal(w, fit_weights(preds, y, folds))


def test_cli_prints_scores_and_refuses_one_run(tmp_path, capsys):
    data = fake_data(100, seed=6)
    rng = np.random.default_rng(6)
    runs = [str(make_run(tmp_path / f"r{i}", data, rng.random(100))) for i in range(2)]
    assert main(["blend", *runs, "--out", str(tmp_path / "b"), "--method", "mean"]) == 0
    out = capsys.readouterr().out
    assert "blend fit: CV AUC" in out and "wrote mean blend" in out
    assert main(["blend", runs[0], "--out", str(tmp_path / "b")]) == 2
    assert "at least two run directories" in capsys.readouterr().err


@pytest.mark.slow
def test_blend_of_real_runs(tmp_path, finished_run, tfrecord_manifest):
    from kitpkg.config import load_config
    from kitpkg.train.cv import run_cv

    config_path, run_dir, _ = finished_run
    other = tmp_path / "seed2"
    run_cv(load_config(config_path, overrides=["train.seed=2"]), other)
    from kitpkg.experiments.runs import compare, find_runs

    rows = {row.run.name: row for row in compare(find_runs([run_dir, other]))}
    assert rows["seed2"].comparable and rows["seed2"].notes == ["train.seed: 1 -> 2"]
    summary = run_blend([run_dir, other], tmp_path / "blend")
    assert len(summary["methods"]["fit"]["weights"]) == 2
    sub, run_sub = pd.read_csv(tmp_path / "blend" / "submission.csv"), pd.read_csv(run_dir / "submission.csv")
    assert list(sub.columns) == list(run_sub.columns) and list(sub.iloc[:, 0]) == list(run_sub.iloc[:, 0])


def _spoil(path, column, values):
    """Overwrite the first len(values) rows of `column` in a run's CSV."""
    frame = pd.read_csv(path, dtype={"id": str})
    frame.loc[: len(values) - 1, column] = values
    frame.to_csv(path, index=False)


def test_refuses_nan_inf_and_out_of_range_predictions_naming_run_file_and_count(tmp_path):
    data = fake_data(120, seed=7, n_test=8)
    rng = np.random.default_rng(7)
    y = data.targets
    good = make_run(tmp_path / "good", data, _sigmoid(2 * y - 1 + rng.normal(0, 1, 120)), _test_preds(rng, 8))
    broken = make_run(tmp_path / "broken", data, _sigmoid(2 * y - 1 + rng.normal(0, 0.5, 120)), _test_preds(rng, 8))
    oof = (broken / "oof.csv").read_bytes()
    _spoil(broken / "oof.csv", "prediction", [np.nan, np.inf, np.nan])  # a diverged run
    with pytest.raises(KitError, match=r"broken.*oof\.csv: 3 predictions are NaN or infinite \(column prediction"):
        run_blend([good, broken], tmp_path / "out")
    (broken / "oof.csv").write_bytes(oof)
    _spoil(broken / "oof.csv", "prediction", [1.7, -0.2])  # logits, not probabilities
    with pytest.raises(KitError, match=r"broken.*oof\.csv: 2 predictions are outside \[0, 1\]"):
        run_blend([good, broken], tmp_path / "out")
    (broken / "oof.csv").write_bytes(oof)
    _spoil(broken / "test_predictions.csv", "prediction", [np.nan])  # the OOF is fine, one test row is not
    with pytest.raises(KitError, match=r"broken.*test_predictions\.csv: 1 prediction is NaN or infinite"):
        run_blend([good, broken], tmp_path / "out")
    assert not (tmp_path / "out" / "submission.csv").exists()  # the NaN never reaches a submission
