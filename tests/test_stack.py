"""`kitpkg stack`: a level-2 model on the runs' OOF, manifest columns and patient-relative features beats a blend when
the label needs what no run sees, gains nothing from a run of noise, never fits fold k on fold k's labels; its
outputs, refusals, command line and its row in `kitpkg runs`.

Run directories are written by tests/fakes/fake_runs.py through the kit's own writers (no training); the manifest
columns (age, sex, site, patient) live in noise-image shards converted by tiny_tables.noise_shards.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fakes.fake_runs import FakeData, fake_data, make_run
from kitpkg.cli import main
from kitpkg.errors import KitError
from kitpkg.experiments.stack import run_stack
from kitpkg.metrics import auc
from tiny_tables import noise_shards

N_PATIENTS, PER_PATIENT, N_TEST = 160, 4, 24
SMALL = {"n_estimators": 300, "learning_rate": 0.1, "n_jobs": 1}  # a small LightGBM: the tests take seconds


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """Lesions of 160 patients (4 each, 5 folds grouped by patient). Malignancy needs the image score z *and* the
    interaction of sex and age; each patient's skin shifts every image score of theirs (u), which says nothing of
    the label. The runs see z + u only. Also a column absent from the test split (biopsy) and a relabelling of the
    target (diagnosis)."""
    root = tmp_path_factory.mktemp("clinic")
    rng = np.random.default_rng(0)
    n = N_PATIENTS * PER_PATIENT
    patient = np.repeat(np.arange(N_PATIENTS), PER_PATIENT)
    age = rng.integers(20, 86, N_PATIENTS)[patient]
    male = rng.random(N_PATIENTS)[patient] < 0.5
    z = rng.normal(size=n)
    u = 1.5 * rng.normal(size=N_PATIENTS)[patient]
    logit = 1.5 * z + np.where(male, 1.0, -1.0) * (age - 52) / 10
    target = (logit + rng.logistic(size=n) * 0.5 > 1.0).astype(int)
    sites = np.array(["head", "torso", "limb"])[rng.integers(0, 3, n)]
    rows = [{"image_name": f"img_{i:04d}", "target": int(target[i]), "patient_id": f"p{patient[i]:03d}",
             "age": int(age[i]), "sex": "male" if male[i] else "female", "site": sites[i], "biopsy": i % 2,
             "diagnosis": "malignant" if target[i] else "benign"} for i in range(n)]
    test_rows = [{"image_name": f"t_{i:03d}", "patient_id": f"q{i // 4}", "age": 30 + i, "sex": "male",
                  "site": "head", "diagnosis": "benign"} for i in range(N_TEST)]
    manifest = noise_shards(root, rows, folds=5, test_rows=test_rows, group_col="patient_id")[32]
    fold_of = manifest.fold_of()
    ids = [r["image_name"] for r in rows]
    data = FakeData(ids, np.array([fold_of[i] for i in ids]), target, N_TEST)
    runs = []
    for r in range(2):  # two image models: the same signal, each its own noise
        oof = _sigmoid(z + u + rng.normal(0, 0.7, n))
        runs.append(make_run(root / f"img{r}", data, oof, rng.random((5, N_TEST, 1)), manifest=manifest,
                             config={"output.id_col": "image_name", "output.pred_col": "target"}))
    return root, data, manifest, runs


def test_stack_beats_the_best_blend_when_the_label_needs_the_table(clinic):
    root, data, _, runs = clinic
    summary = run_stack(runs, root / "stack", columns=["age", "sex", "site"], seeds=2, params=SMALL)
    best_blend = max(s["mean"] for s in summary["blends"].values())
    assert max(r["mean"] for r in summary["runs"]) < 0.75
    assert summary["stack"]["mean"] > best_blend + 0.1, (summary["stack"]["mean"], best_blend)
    print(f"(a) stack CV AUC {summary['stack']['mean']:.4f} vs best blend {best_blend:.4f}")
    assert {"age", "sex", "site", "group_size"} <= set(summary["features"])
    assert summary["group_col"] == "patient_id" and summary["categorical"] == ["sex", "site"]
    assert summary["test"].startswith("level-2 models fitted on all OOF rows")
    top = list(summary["importance"])[:4]
    assert "age" in top and "sex" in top  # the interaction is what the runs miss
    # the nested OOF scores as reported, in the runs' format
    oof = pd.read_csv(root / "stack" / "oof.csv")
    assert list(oof.columns) == list(pd.read_csv(runs[0] / "oof.csv").columns)
    scores = [auc(g["target"], g["prediction"]) for _, g in oof.groupby("fold")]
    assert np.mean(scores) == pytest.approx(summary["stack"]["mean"], abs=1e-6)
    sub = pd.read_csv(root / "stack" / "submission.csv")
    assert list(sub.columns) == ["image_name", "target"] and len(sub) == N_TEST and sub["target"].between(0, 1).all()
    report = (root / "stack" / "report.md").read_text()
    assert "(best blend)" in report and "**stack (nested)**" in report and "![level-2 feature importance]" in report
    assert (root / "stack" / "importance.png").stat().st_size > 1000
    on_disk = json.loads((root / "stack" / "stack.json").read_text())
    assert on_disk["stack"]["folds"] == {str(k): v for k, v in summary["stack"]["folds"].items()}


def test_the_group_features_take_out_the_patient_shift(clinic):
    """Without columns, comparing each lesion with the patient's others removes the skin shift u: the stack on the
    group features beats the one without them."""
    root, _, _, runs = clinic
    grouped = run_stack(runs, root / "grouped", seeds=1, params=SMALL)
    alone = run_stack(runs, root / "alone", group_col="none", seeds=1, params=SMALL)
    assert grouped["stack"]["mean"] > alone["stack"]["mean"] + 0.03
    assert "group_size" not in alone["features"]


def test_a_noise_run_gains_nothing(tmp_path):
    data = fake_data(800, seed=3, n_test=10)
    rng = np.random.default_rng(3)
    y = data.targets
    good = [make_run(tmp_path / f"good{i}", data, _sigmoid(2 * y - 1 + rng.normal(0, 1.5, 800)),
                     rng.random((5, 10, 1))) for i in range(2)]
    noise = make_run(tmp_path / "noise", data, rng.random(800), rng.random((5, 10, 1)))
    clean = run_stack(good, tmp_path / "clean", group_col=None, seeds=2, params=SMALL)
    noisy = run_stack([*good, noise], tmp_path / "noisy", group_col=None, seeds=2, params=SMALL)
    best_blend = max(s["mean"] for s in noisy["blends"].values())
    print(f"(b) stack with a noise run: CV AUC {noisy['stack']['mean']:.4f}, without it "
          f"{clean['stack']['mean']:.4f}; best blend {best_blend:.4f}")
    assert noisy["stack"]["mean"] <= clean["stack"]["mean"] + 0.005
    assert noisy["stack"]["mean"] <= best_blend + 0.005


def test_shuffling_fold_k_targets_leaves_fold_k_untouched(clinic, tmp_path):
    _, data, manifest, runs = clinic
    before = run_stack(runs, tmp_path / "before", columns=["age", "sex"], seeds=1, params=SMALL)
    held = data.folds == 0
    shuffled = data.targets.copy()
    shuffled[held] = np.random.default_rng(9).permutation(shuffled[held])
    assert (shuffled != data.targets).any()
    spoiled_data = FakeData(data.ids, data.folds, shuffled, N_TEST)
    spoiled = []
    for r in runs:
        oof = pd.read_csv(r / "oof.csv", dtype={"id": str}).set_index("id").loc[data.ids, "prediction"].to_numpy()
        spoiled.append(make_run(tmp_path / r.name, spoiled_data, oof, np.random.default_rng(1).random((5, N_TEST, 1)),
                                manifest=manifest))
    after = run_stack(spoiled, tmp_path / "after", columns=["age", "sex"], seeds=1, params=SMALL)
    a = pd.read_csv(tmp_path / "before" / "oof.csv", dtype={"id": str}).set_index("id").loc[data.ids]
    b = pd.read_csv(tmp_path / "after" / "oof.csv", dtype={"id": str}).set_index("id").loc[data.ids]
    np.testing.assert_array_equal(a.loc[held, "prediction"], b.loc[held, "prediction"])
    assert auc(data.targets[held], b.loc[held, "prediction"]) == before["stack"]["folds"][0]
    assert not np.allclose(a.loc[~held, "prediction"], b.loc[~held, "prediction"])  # the labels are used elsewhere


@pytest.mark.parametrize("column, why", [
    ("target", "is the label column"), ("fold", "is the fold column"), ("image_name", "is the id column"),
    ("patient_id", "is the group column"), ("diagnosis", "is a relabelling of the label 'target'"),
    ("biopsy", "has no value in the test split"), ("colour", "is not in the shards")])
def test_refuses_leaking_or_missing_columns(clinic, tmp_path, column, why):
    _, _, _, runs = clinic
    with pytest.raises(KitError, match=f"--columns column '{column}' {why}"):
        run_stack(runs, tmp_path / "out", columns=[column])
    assert not (tmp_path / "out").exists()


def test_refuses_a_group_column_the_test_split_lacks(clinic, tmp_path):
    _, _, _, runs = clinic
    with pytest.raises(KitError, match="--group-col biopsy has no value in the test split"):
        run_stack(runs, tmp_path / "out", group_col="biopsy")
    with pytest.raises(KitError, match="--group-col clinic: not a column of the shards"):
        run_stack(runs, tmp_path / "out", group_col="clinic")


def test_refuses_runs_on_other_folds_ids_or_test_ids(tmp_path):
    data = fake_data(100, seed=4, n_test=6)
    rng = np.random.default_rng(4)
    a = make_run(tmp_path / "a", data, rng.random(100), rng.random((5, 6, 1)))
    moved = make_run(tmp_path / "moved", FakeData(data.ids, np.roll(data.folds, 1), data.targets, 6), rng.random(100),
                     rng.random((5, 6, 1)))
    with pytest.raises(KitError, match=r"different folds \(\d+ samples in other folds"):
        run_stack([a, moved], tmp_path / "out", group_col=None)
    fewer = make_run(tmp_path / "fewer", FakeData(data.ids[:90], data.folds[:90], data.targets[:90], 6),
                     rng.random(90), rng.random((5, 6, 1)))
    with pytest.raises(KitError, match=r"different folds \(other samples"):
        run_stack([a, fewer], tmp_path / "out", group_col=None)
    other_test = make_run(tmp_path / "other_test", FakeData(data.ids, data.folds, data.targets, 7), rng.random(100),
                          rng.random((5, 7, 1)))
    with pytest.raises(KitError, match="the test predictions cover different ids"):
        run_stack([a, other_test], tmp_path / "out", group_col=None)
    with pytest.raises(KitError, match="its manifest is not at the recorded shards path"):
        run_stack([a], tmp_path / "out", columns=["age"])
    with pytest.raises(KitError, match="--model xgb: choose one of lgbm, linear"):
        run_stack([a], tmp_path / "out", model="xgb")
    assert not (tmp_path / "out").exists()


def test_missing_lightgbm_is_one_line_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "lightgbm", None)  # import lightgbm -> ImportError
    with pytest.raises(KitError, match=r"needs LightGBM: `pip install lightgbm`"):
        run_stack([tmp_path / "a"], tmp_path / "out")


def test_linear_stacks_a_regression_and_multiclass_lgbm_a_multilabel(tmp_path):
    from kitpkg.task import make_task

    rng = np.random.default_rng(5)
    n = 300
    folds = np.arange(n) % 3
    values = rng.normal(size=(n, 2)) * [10, 1] + [50, 0]
    data = FakeData([f"s{i:03d}" for i in range(n)], folds, values, 5)
    task = make_task("regression", 2, labels=("size", "weight"))
    runs = [make_run(tmp_path / f"r{i}", data, values + rng.normal(0, 1 + i, values.shape), rng.random((3, 5, 2)),
                     task=task) for i in range(2)]
    summary = run_stack(runs, tmp_path / "reg", group_col=None, model="linear")
    assert summary["metric"] == "RMSE" and summary["higher_is_better"] is False
    assert summary["stack"]["mean"] < min(r["mean"] for r in summary["runs"])  # the better run, weighted in
    oof = pd.read_csv(tmp_path / "reg" / "oof.csv")
    assert list(oof.columns) == list(pd.read_csv(runs[0] / "oof.csv").columns)
    labels = (rng.random((n, 2)) < 0.4).astype(int)
    data = FakeData([f"s{i:03d}" for i in range(n)], folds, labels, 5)
    task = make_task("multilabel", 2, labels=("cat", "dog"))
    runs = [make_run(tmp_path / f"m{i}", data, _sigmoid((2 * labels - 1) + rng.normal(0, 1, labels.shape)),
                     rng.random((3, 5, 2)), task=task) for i in range(2)]
    summary = run_stack(runs, tmp_path / "ml", group_col=None, seeds=1, params=SMALL)
    assert summary["metric"] == "mean AUC" and summary["stack"]["mean"] > 0.75
    assert list(pd.read_csv(tmp_path / "ml" / "submission.csv").columns)[1:] == ["cat", "dog"]
    classes = rng.integers(0, 3, n)
    data = FakeData([f"s{i:03d}" for i in range(n)], folds, classes, 5)
    runs = [make_run(tmp_path / f"c{i}", data, 0.3 * np.eye(3)[classes] + 0.7 * rng.dirichlet(np.ones(3), n),
                     rng.dirichlet(np.ones(3), (3, 5))) for i in range(2)]
    summary = run_stack(runs, tmp_path / "mc", group_col=None, model="linear")
    assert summary["metric"] == "accuracy" and summary["stack"]["mean"] > max(r["mean"] for r in summary["runs"])
    oof = pd.read_csv(tmp_path / "mc" / "oof.csv")
    assert list(oof.columns) == ["id", "fold", "target", "prediction", "prob_0", "prob_1", "prob_2"]
    np.testing.assert_allclose(oof[["prob_0", "prob_1", "prob_2"]].sum(axis=1), 1, atol=1e-6)


def test_cli_writes_the_stack_and_runs_lists_it(clinic, tmp_path, capsys):
    root, _, _, runs = clinic
    out = tmp_path / "cli_stack"
    (tmp_path / "columns.yaml").write_text("columns: [age, sex]\n")  # --columns as a small YAML file
    assert main(["stack", *map(str, runs), "--out", str(out), "--columns", str(tmp_path / "columns.yaml"),
                 "--seeds", "1"]) == 0
    assert json.loads((out / "stack.json").read_text())["columns"] == ["age", "sex"]
    printed = capsys.readouterr().out
    assert "best blend (" in printed and "stack (lgbm, " in printed and f"wrote stack: {out}" in printed
    for name in ("oof.csv", "test_predictions.csv", "submission.csv", "stack.json", "report.md", "importance.png"):
        assert (out / name).is_file(), name
    assert main(["stack", str(runs[0]), "--out", str(tmp_path / "x"), "--columns", "target"]) == 2
    assert "--columns column 'target' is the label column" in capsys.readouterr().err
    assert main(["blend", *map(str, runs), "--out", str(tmp_path / "cli_blend")]) == 0
    for run in runs:
        (tmp_path / run.name).symlink_to(run, target_is_directory=True)
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "cli_stack" in printed and "cli_blend" in printed and "stack (lgbm" in printed
    table = (tmp_path / "runs.md").read_text()
    assert "| cli_stack | stack" in table and "| cli_blend | blend" in table
