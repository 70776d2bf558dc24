"""Pseudo-labels per task kind: `--soft` sets hold the teacher's probabilities (multilabel, soft) or values
(regression, ordinal) as floats in label columns named as the student's, one set per teacher fold; a student's fold k
trains on teacher fold k's values; a kind asked for what it cannot give is refused naming the option."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kitpkg.config import config_from_dict, to_dict
from kitpkg.errors import KitError
from kitpkg.shards.manifest import load_manifest
from kitpkg.shards.reader import iter_manifest_shard
from kitpkg.task import make_task
from kitpkg.train.pseudo import make_pseudo_labels
from kitpkg.train.runstate import RunState
from tiny_tables import demo_csv_with

SIDE = 32
BITS = ["y0", "y1", "y2"]  # multilabel columns
LABELS = {"multilabel": BITS, "regression": ["size"]}


@pytest.fixture(scope="module")
def kinds_csv(demo_source, tmp_path_factory):
    """The demo train CSV plus three 0/1 columns (multilabel) and a fractional float column (regression)."""
    rng = np.random.default_rng(3)

    def columns(row):  # size never whole: auto reads it as a regression target
        return {**{c: str(int(rng.uniform() < p)) for c, p in zip(BITS, (0.5, 0.4, 0.5))},
                "size": f"{rng.uniform(0, 10):.3f}5"}
    return demo_csv_with(demo_source, tmp_path_factory.mktemp("kinds_csv") / "train.csv", columns)


@pytest.fixture(scope="module")
def kind_shards(demo_source, kinds_csv, tmp_path_factory):
    """kind -> its 32 px TFRecord shards (3 folds, a test split), converted once in this module."""
    from kitpkg.shards.convert import convert

    made = {}

    def make(kind):
        if kind not in made:
            out = tmp_path_factory.mktemp(f"shards_{kind}")
            made[kind] = convert(demo_source.images, kinds_csv, out, fmt="tfrecord", sizes=(SIDE,), folds=3,
                                 label_col=",".join(LABELS[kind]), test_csv=demo_source.test_csv, shard_samples=8,
                                 workers=1, progress=False)[SIDE]
        return made[kind]
    return make


def _config(manifest, **data):
    return config_from_dict({
        "data": {"shards": manifest.root, "image_size": SIDE, "batch_size": 8, "num_workers": 0, **data},
        "model": {"name": "test_resnet", "pretrained": False}, "optim": {"name": "adamw", "lr": 0.003},
        "sched": {"name": "cosine", "warmup_epochs": 0}, "predict": {"tta": []},
        "train": {"epochs": 1, "seed": 1, "deterministic": True}, "output": {"id_col": "image_name"}})


@pytest.fixture(scope="module")
def teacher(kind_shards, tmp_path_factory):
    """kind -> (shards, run dir) of a finished tiny CV of that kind (train.task auto picks it from the columns)."""
    from kitpkg.train.cv import run_cv

    made = {}

    def make(kind):
        if kind not in made:
            run_dir = tmp_path_factory.mktemp(f"teacher_{kind}") / "run"
            with pytest.MonkeyPatch.context() as patch:  # plots: seconds, not tested here
                patch.setattr("kitpkg.train.report.write_report", lambda run_dir: None)
                run_cv(_config(kind_shards(kind)), run_dir)
            made[kind] = (kind_shards(kind), run_dir)
        return made[kind]
    return make


def _fold_values(run_dir, width):
    """{fold: {test id: the fold model's values}} read from test_fold{k}.csv (probabilities or values: s0..)."""
    values = {}
    for path in sorted(Path(run_dir).glob("test_fold*.csv")):
        frame = pd.read_csv(path, dtype={"id": str})
        cols = [f"s{j}" for j in range(width)]
        values[int(path.stem[len("test_fold"):])] = {i: row for i, row in
                                                      zip(frame["id"], frame[cols].to_numpy(np.float64))}
    return values


def _stored(manifest):
    """{id: floats of the label columns} as the set's records hold them."""
    return {r.id: np.array([r.fields[c] for c in manifest.label_columns()], dtype=np.float64)
            for i in range(len(manifest.shards)) for r in iter_manifest_shard(manifest, i)}


def _batch_targets(config, data, k, test_ids):
    """{pseudo id: its target as the student's fold k training batches carry it}."""
    from kitpkg.train.cv import make_datamodule
    from kitpkg.train.recipe import build_recipe

    seen = [(i, np.atleast_1d(t.numpy()).astype(np.float64))
            for b in make_datamodule(build_recipe(config, data, k), data).train_dataloader()
            for i, t in zip(b["id"], b["target"]) if i in test_ids]
    assert len(seen) == len({i for i, _ in seen})  # each pseudo sample once: one set, not one per teacher fold
    return dict(seen)


def _close(got, expected, atol=1e-6):
    assert set(got) == set(expected)
    for i in expected:
        np.testing.assert_allclose(got[i], expected[i], rtol=1e-6, atol=atol, err_msg=i)


@pytest.mark.parametrize("kind", ["multilabel", "regression"])
def test_a_student_trains_fold_k_on_teacher_fold_k_soft_values(kind, teacher, tmp_path, monkeypatch):
    from kitpkg.train.cv import run_cv
    from kitpkg.train.inputs import load_inputs

    shards, run_dir = teacher(kind)
    assert RunState.read(run_dir).task.kind == kind
    cols = LABELS[kind]
    expected = _fold_values(run_dir, len(cols))
    assert any(not np.allclose(expected[0][i], expected[1][i]) for i in expected[0])  # the check tells folds apart
    out = tmp_path / "pseudo"
    sets = make_pseudo_labels(str(out), run_dir=str(run_dir), soft=True)
    for k, manifest in sets.items():
        assert manifest.label_columns() == cols and all(manifest.schema[c] == "float" for c in cols)
        assert manifest.options["pseudo"]["soft_kind"] == kind and manifest.options["pseudo"]["teacher_fold"] == k
        _close(_stored(manifest), expected[k])  # every test sample, the fold model's own values
    (out / "fold0").rename(out / "x")  # names must not matter: the manifests' provenance decides
    (out / "fold1").rename(out / "fold0")
    (out / "x").rename(out / "fold1")

    student = _config(shards, extra_train=[str(out)])
    data = load_inputs(student)
    test_ids = set(expected[0])
    for k in sorted(expected):
        (pseudo,) = data.extras_for(k)
        assert pseudo.options["pseudo"]["teacher_fold"] == k
        _close(_batch_targets(student, data, k, test_ids), expected[k])  # float32 in the batch
    monkeypatch.setattr("kitpkg.train.report.write_report", lambda run_dir: None)
    run_cv(student, tmp_path / "student")  # trains every fold on its set: every training sample predicted once
    oof = pd.read_csv(tmp_path / "student" / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(i for s in shards.select("train") for i in s.ids)
    assert np.isfinite(oof[[c for c in oof.columns if c.startswith("pred")]].to_numpy()).all()


def _synthetic_teacher(run_dir, manifest, task, values):
    """A finished run of `task` over `manifest` whose fold k test file holds `values[k]` (rows in test id order,
    as `kitpkg cv` writes them in predict.average prob space)."""
    from kitpkg.train import predict as P
    from kitpkg.train.inputs import RunInputs
    from kitpkg.train.runstate import relpath

    config = config_from_dict({"data": {"shards": manifest.root, "image_size": manifest.image_size},
                               "model": {"name": "test_resnet", "num_classes": task.outputs}})
    inputs = RunInputs(manifest, [], task.outputs, task=task)
    state = RunState.open(run_dir, config, inputs.fingerprints(), task=task)
    state.set("shards", relpath(Path(manifest.root), run_dir))
    ids = P.fold_ids(manifest, "test")
    for k in manifest.folds():
        frame = pd.DataFrame(np.asarray(values[k], dtype=float).reshape(len(ids), -1),
                             columns=P.score_columns(task.outputs))
        frame.insert(0, "id", ids)
        P.write_csv(frame, run_dir / f"test_fold{k}.csv")
        state.update_fold(k, status="done", score=0.5)
    return run_dir, ids


def test_an_ordinal_teacher_gives_its_values_on_the_class_scale(tfrecord_manifest, tmp_path, monkeypatch):
    from kitpkg.train.cv import run_cv
    from kitpkg.train.inputs import load_inputs

    rng = np.random.default_rng(0)
    n = tfrecord_manifest.num_samples("test")
    values = {k: rng.uniform(-0.3, 1.3, size=n) for k in tfrecord_manifest.folds()}
    task = make_task("ordinal", 1, labels=("target",), metric="qwk")
    run_dir, ids = _synthetic_teacher(tmp_path / "teacher", tfrecord_manifest, task, values)
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), run_dir=str(run_dir), soft=True)
    expected = {k: {i: np.array([v]) for i, v in zip(ids, values[k])} for k in values}
    for k in values:
        pseudo = load_manifest(str(out / f"fold{k}"))
        assert pseudo.label_columns() == ["target"] and pseudo.schema["target"] == "float"
        _close(_stored(pseudo), expected[k])
    config = config_from_dict({"data": {"shards": tfrecord_manifest.root, "image_size": 64, "batch_size": 8,
                                        "num_workers": 0, "extra_train": [str(out)]},
                               "model": {"name": "test_resnet", "pretrained": False}, "predict": {"tta": []},
                               "train": {"task": "ordinal", "epochs": 1, "metric": "rmse"}})
    binary = config_from_dict({**to_dict(config), "train": {"task": "binary", "epochs": 1}})
    with pytest.raises(KitError, match=r"soft values \(kitpkg pseudo --soft\) of a teacher of kind ordinal, not "
                                       r"labels a student of kind binary"):
        load_inputs(binary)  # a student of another kind would take the values for class indices
    data = load_inputs(config)
    for k in values:  # the student's own labels stay classes; the pseudo ones are the teacher's values
        _close(_batch_targets(config, data, k, set(ids)), expected[k])
    monkeypatch.setattr("kitpkg.train.report.write_report", lambda run_dir: None)
    run_cv(config, tmp_path / "student", folds=[0])  # an ordinal student regresses them (float targets) and finishes
    assert RunState.read(tmp_path / "student").done_folds() == [0]


def test_a_soft_teacher_gives_its_probabilities_per_column(kind_shards, tmp_path):
    shards = kind_shards("multilabel")  # three float label columns: a soft task's columns, named as the student's
    rng = np.random.default_rng(1)
    n = shards.num_samples("test")
    values = {k: rng.dirichlet([0.5] * 3, size=n) for k in shards.folds()}
    task = make_task("soft", 3, labels=tuple(BITS))
    run_dir, ids = _synthetic_teacher(tmp_path / "teacher", shards, task, values)
    sets = make_pseudo_labels(str(tmp_path / "pseudo"), run_dir=str(run_dir), soft=True)
    for k, manifest in sets.items():
        assert manifest.label_columns() == BITS and manifest.class_counts is None
        _close(_stored(manifest), dict(zip(ids, values[k])))


def test_a_kind_asked_for_what_it_cannot_give_is_refused_naming_the_option(tfrecord_manifest, tmp_path, capsys):
    from kitpkg.cli import main

    n = tfrecord_manifest.num_samples("test")
    folds = tfrecord_manifest.folds()
    binary, ids = _synthetic_teacher(tmp_path / "b" / "run", tfrecord_manifest, make_task("binary", 1),
                                     {k: np.linspace(0, 1, n) for k in folds})
    ordinal, _ = _synthetic_teacher(tmp_path / "o" / "run", tfrecord_manifest,
                                    make_task("ordinal", 1, metric="qwk"), {k: np.linspace(0, 1, n) for k in folds})
    out = str(tmp_path / "p")
    with pytest.raises(KitError, match=r"^--soft: .* binary run, whose pseudo-labels are confident classes"):
        make_pseudo_labels(out, run_dir=str(binary), soft=True)
    with pytest.raises(KitError, match=r"ordinal run has no confident classes .*; add --soft"):
        make_pseudo_labels(out, run_dir=str(ordinal))
    with pytest.raises(KitError, match=r"^--threshold: --soft keeps every test sample"):
        make_pseudo_labels(out, run_dir=str(ordinal), soft=True, high=0.8)
    with pytest.raises(KitError, match=r"^--low: --soft keeps every test sample"):
        make_pseudo_labels(out, run_dir=str(ordinal), soft=True, low=0.1)
    csv_path = tmp_path / "preds.csv"
    pd.DataFrame({"id": ids, "prediction": np.linspace(0, 1, n)}).to_csv(csv_path, index=False)
    with pytest.raises(KitError, match=r"^--soft: takes --run RUN"):
        make_pseudo_labels(out, predictions=str(csv_path), shards=tfrecord_manifest.root, soft=True)
    assert not Path(out).exists()  # nothing written by a refused request

    for argv in (["--run", str(ordinal)], ["--run", str(binary), "--soft"], ["--run", str(ordinal), "--soft",
                                                                              "--threshold", "0.8"]):
        assert main(["pseudo", *argv, "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--soft" in err
    assert main(["pseudo", "--run", str(ordinal), "--soft", "--out", out]) == 0
    assert "soft targets: target" in capsys.readouterr().out
