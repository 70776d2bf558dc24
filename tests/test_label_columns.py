"""Several label columns (`--label-col a,b,c`): what convert and index record, the targets a batch holds, the folds
they balance, and the errors; one label column stays exactly as it was."""
from __future__ import annotations

import csv
import json
import shutil
import tarfile

import numpy as np
import pytest
import torch

from conftest import SHARD_SIZE
from tiny_tables import demo_csv_with
from kitpkg.cli import main
from kitpkg.data.datamodule import ShardDataModule
from kitpkg.data.dataset import ShardDataset, TrainOptions
from kitpkg.errors import KitError
from kitpkg.shards.convert import convert, summarize
from kitpkg.shards.folds import assign_folds, stratified_folds
from kitpkg.shards.index import index
from kitpkg.shards.manifest import load_manifest
from kitpkg.shards.reader import iter_manifest_shard

FLOATS = ["f0", "f1", "f2"]  # regression targets: fractional values of either sign
BITS = ["y0", "y1", "y2"]  # multilabel: 0/1, rare to common


@pytest.fixture(scope="module")
def label_csv(demo_source, tmp_path_factory):
    """The demo train CSV plus three float and three 0/1 label columns (written as text here, read back by the csv
    module as the reference)."""
    rng = np.random.default_rng(7)

    def columns(row):
        return {**{c: f"{rng.normal() * 10:.4f}" for c in FLOATS},
                **{c: str(int(rng.uniform() < p)) for c, p in zip(BITS, (0.5, 0.3, 0.15))}}
    return demo_csv_with(demo_source, tmp_path_factory.mktemp("label_csv") / "train.csv", columns)


def _csv_values(path, cols, kind=float):
    with open(path, newline="") as f:
        return {r["image_name"]: [kind(r[c]) for c in cols] for r in csv.DictReader(f)}


_CONVERTED = {}


@pytest.fixture(scope="module")
def converted(demo_source, label_csv, tmp_path_factory):
    """convert(fmt, label_col) → its manifest, made once per (format, label columns) in this module."""
    def make(fmt, label_col):
        key = (str(label_csv), fmt, str(label_col))
        if key not in _CONVERTED:
            out = tmp_path_factory.mktemp(f"labels_{fmt}")
            _CONVERTED[key] = convert(demo_source.images, label_csv, out, fmt=fmt, sizes=(SHARD_SIZE,), folds=3,
                                      label_col=label_col, test_csv=demo_source.test_csv, shard_samples=8,
                                      workers=1, progress=False)[SHARD_SIZE]
        return _CONVERTED[key]
    return make


def _shard_labels(manifest):
    return {i: v for s in manifest.select("train") for i, v in zip(s.ids, s.labels)}


def _loader_targets(loader):
    out = {}
    for batch in loader:
        target = batch["target"]
        assert target.dtype == torch.float32 and target.shape == (len(batch["id"]), 3)
        out.update({i: t for i, t in zip(batch["id"], target.numpy().tolist())})
    return out


@pytest.mark.parametrize("fmt", ["tfrecord", "wds"])
@pytest.mark.parametrize("cols", [FLOATS, BITS], ids=["floats", "zero_one"])
def test_several_label_columns_round_trip(converted, label_csv, demo_source, fmt, cols):
    m = converted(fmt, ",".join(cols))
    kind = float if cols == FLOATS else int
    truth = _csv_values(label_csv, cols, kind)
    assert (m.label_cols, m.label_col, m.label_columns()) == (cols, None, cols)
    assert [m.schema[c] for c in cols] == ["float" if kind is float else "int64"] * 3
    assert m.classes() is None and "classes" not in m.options
    assert load_manifest(m.root) == m and load_manifest(m.root).label_columns() == cols
    # the manifest keeps every train sample's values exactly as the CSV's text says (floats never rounded to ints)
    stored = _shard_labels(m)
    assert stored == truth and all(type(v) is kind for row in stored.values() for v in row)
    if kind is int:
        assert m.class_counts == {c: sum(row[j] for row in truth.values()) for j, c in enumerate(cols)}
    else:
        assert m.class_counts is None  # a float target has no classes to count
    # the records hold each column (a TFRecord float feature is float32, a tar's JSON row keeps the float64)
    first = next(iter_manifest_shard(m, 0))
    exact = [float(np.float32(v)) for v in truth[first.id]] if fmt == "tfrecord" and kind is float else truth[first.id]
    assert [first.fields[c] for c in cols] == exact
    # targets through the DataModule's loaders: float32 B×3 in column order; the test split has none (-1)
    dm = ShardDataModule(m, fold=0, batch_size=7, num_workers=0, pin_memory=False)
    got = {**_loader_targets(dm.val_dataloader()), **_loader_targets(dm.eval_dataloader("train", folds=[1, 2]))}
    assert got == {i: np.float32(v).tolist() for i, v in truth.items()}
    tests = _loader_targets(dm.test_dataloader())
    assert len(tests) == 10 and all(t == [-1.0, -1.0, -1.0] for t in tests.values())
    train = next(iter(dm.train_dataloader()))
    assert train["target"].shape == (7, 3) and all(t == np.float32(truth[i]).tolist()
                                                   for i, t in zip(train["id"], train["target"].tolist()))
    # patients stay in one fold with several label columns too
    fold_of = m.fold_of()
    with open(label_csv, newline="") as f:
        patients = [(r["patient_id"], fold_of[r["image_name"]]) for r in csv.DictReader(f)]
    assert all(len({k for p, k in patients if p == q}) == 1 for q, _ in patients)
    assert json.loads(open(f"{m.root}/manifest.json").read())["label_cols"] == cols


def test_a_rerun_keeps_the_manifest_of_several_columns(converted, demo_source, label_csv):
    m = converted("wds", ",".join(BITS))
    before = open(f"{m.root}/manifest.json", "rb").read()
    again = convert(demo_source.images, label_csv, m.root.rsplit("/", 1)[0], fmt="wds", sizes=(SHARD_SIZE,), folds=3,
                    label_col=list(BITS), test_csv=demo_source.test_csv, shard_samples=8, workers=1,
                    progress=False)[SHARD_SIZE]  # the same columns as a list: the same options, so it resumes
    assert again == m and open(f"{m.root}/manifest.json", "rb").read() == before


def test_tars_of_several_columns_have_no_class_member(converted):
    m = converted("wds", ",".join(BITS))
    with tarfile.open(m.path(m.shards[0])) as tar:
        assert {n.split(".", 1)[1] for n in tar.getnames()} == {"jpg", "json"}


def test_summary_names_positives_or_means(converted):
    text = summarize(converted("tfrecord", ",".join(BITS)))
    assert "positives {'y0':" in text and "positives per label column" in text
    text = summarize(converted("tfrecord", ",".join(FLOATS)))
    assert "mean f0=" in text and "f0, f1, f2: numbers, not classes" in text


# --- one label column: as it always was ------------------------------------------------------------------------

_KEYS_BEFORE = ["format", "schema", "shards", "id_col", "label_col", "group_col", "image_key", "compression",
                "image_size", "aspect", "num_folds", "class_counts", "source_csv_sha256", "rejected", "options",
                "format_version", "kitpkg_version"]  # manifest.json's keys before several label columns existed


def test_one_label_column_manifest_keeps_its_keys_and_reads_as_before(any_manifest, demo_source, tmp_path):
    data = json.loads(open(f"{any_manifest.root}/manifest.json").read())
    assert list(data) == _KEYS_BEFORE and data["label_col"] == "target"
    with open(demo_source.train_csv, newline="") as f:
        targets = [r["target"] for r in csv.DictReader(f)]
    assert data["class_counts"] == {t: targets.count(t) for t in sorted(set(targets))}
    assert any_manifest.label_columns() == ["target"] and any_manifest.class_column() == "target"
    old = tmp_path / "manifest.json"  # a manifest written before label_cols existed has no such key
    old.write_text(json.dumps(data))
    assert load_manifest(old).label_columns() == ["target"] and load_manifest(old).label_cols is None


def _greedy_before(groups, labels, k, seed=42):
    """assign_folds as it was before several label columns (a reference: the new code must place folds the same)."""
    n = len(groups)
    labels = list(labels) if labels is not None else [0] * n
    classes = sorted(set(labels), key=str)
    class_index = {c: i for i, c in enumerate(classes)}
    group_ids = {}
    for g in groups:
        group_ids.setdefault(g, len(group_ids))
    counts = np.zeros((len(group_ids), len(classes)))
    members = [[] for _ in group_ids]
    for i, (g, y) in enumerate(zip(groups, labels)):
        counts[group_ids[g], class_index[y]] += 1
        members[group_ids[g]].append(i)
    weight = 1.0 / counts.sum(axis=0)
    order = np.random.default_rng(seed).permutation(len(group_ids))
    key = [(-(counts[g] * weight).max() if len(classes) > 1 else 0.0, -counts[g].sum()) for g in order]
    order = [g for _, g in sorted(zip(key, order), key=lambda t: t[0])]
    fold_counts = np.zeros((k, len(classes)))
    fold_of = [0] * n
    for g in order:
        c = counts[g]
        cost = (((2 * fold_counts + c) * c) * weight**2).sum(axis=1)
        cost += 1e-9 * (2 * fold_counts.sum(axis=1) + c.sum()) * c.sum()
        best = int(np.argmin(cost))
        fold_counts[best] += counts[g]
        for i in members[g]:
            fold_of[i] = best
    return fold_of


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_of_one_class_column_are_placed_as_before(seed):
    rng = np.random.default_rng(seed)
    groups = [f"P{g}" for g in rng.integers(0, 150, 900)]
    cases = [list(rng.integers(0, 2, 900)), list(rng.choice(["nevus", "mel", "bkl"], 900, p=[.8, .05, .15])),
             [float(x) for x in rng.integers(0, 2, 900)], None]
    for labels in cases:
        want = _greedy_before(groups, labels, 5, seed)
        assert assign_folds(groups, labels, 5, seed) == want
        assert stratified_folds(groups, labels, 5, seed) == want


def test_one_fractional_float_column_is_a_target_not_classes(converted, label_csv):
    m = converted("wds", "f0")
    truth = {i: v[0] for i, v in _csv_values(label_csv, ["f0"]).items()}
    assert m.label_col == "f0" and m.label_cols is None and m.label_columns() == ["f0"]
    assert m.class_counts is None and "classes" not in m.options and _shard_labels(m) == truth
    with tarfile.open(m.path(m.shards[0])) as tar:
        assert not any(n.endswith(".cls") for n in tar.getnames()), "no class index of a regression target"
    ds = ShardDataset(m, "val", 0, batch_size=64, image_size=SHARD_SIZE, training=False)
    batch = next(iter(ds))
    assert batch["target"].dtype.is_floating_point and batch["target"].shape == (len(batch["id"]),)
    assert batch["target"].tolist() == [np.float32(truth[i]).item() for i in batch["id"]]


# --- kitpkg index of foreign shards -----------------------------------------------------------------------------

def _foreign_copy(manifest, folder):
    folder.mkdir()
    ext = ".tfrec" if manifest.format == "tfrecord" else ".tar"
    for i, s in enumerate(manifest.shards):
        shutil.copy(manifest.path(s), folder / f"{s.split}{i:02d}-{s.samples}{ext}")
    return folder


@pytest.mark.parametrize("fmt", ["tfrecord", "wds"])
def test_index_records_several_label_columns(converted, tmp_path, fmt, capsys):
    ours = converted(fmt, ",".join(FLOATS))
    folder = _foreign_copy(ours, tmp_path / "foreign")
    m = index([str(folder)], label_col=",".join(FLOATS))
    assert (m.label_cols, m.label_col, m.class_counts) == (FLOATS, None, None)
    stored = _shard_labels(m)
    expect = _shard_labels(ours)
    if fmt == "tfrecord":  # read back from the float32 features
        expect = {i: [float(np.float32(v)) for v in row] for i, row in expect.items()}
    assert stored == expect and load_manifest(folder) == m
    ds = ShardDataset(m, "train", folds=m.folds(), batch_size=64, image_size=SHARD_SIZE, training=False)
    got = {i: t for b in ds for i, t in zip(b["id"], b["target"].tolist())}
    assert got == {i: np.float32(v).tolist() for i, v in expect.items()}
    bits = converted(fmt, ",".join(BITS))
    folder = _foreign_copy(bits, tmp_path / "bits")
    assert main(["index", str(folder), "--label-col", ",".join(BITS), "--folds", "3"]) == 0
    assert "positives per label column" in capsys.readouterr().out
    again = load_manifest(folder)
    assert again.label_cols == BITS and again.class_counts == bits.class_counts


# --- the folds several columns balance --------------------------------------------------------------------------

def _patients(seed, n_patients=300):
    """(group of each sample, its patient's draw, the rng): groups of 1-10 samples whose labels depend on the
    patient's draw, so groups are not interchangeable."""
    rng = np.random.default_rng(seed)
    groups, bases = [], []
    for p in range(n_patients):
        base = rng.normal()
        for _ in range(int(rng.integers(1, 11))):
            groups.append(p)
            bases.append(base)
    return groups, bases, rng


def _spread_ok(folds, member, groups, k):
    """A stratum's count per fold differs by at most what one group can add (never less than 2)."""
    counts = [int(np.sum(member[folds == f])) for f in range(k)]
    biggest = max(int(np.sum(member[np.array(groups) == g])) for g in set(groups))
    return max(counts) - min(counts) <= max(2, biggest)


def _groups_whole(folds, groups):
    return all(len(set(folds[np.array(groups) == g])) == 1 for g in set(groups))


@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_folds_balance_every_label_and_keep_groups(seed):
    groups, bases, rng = _patients(seed)
    rates = (0.3, 0.08, 0.01)  # the last label is rare: a few dozen positives in all
    labels = [[int(rng.uniform() < r * (1 + b * b)) for r in rates] for b in bases]
    folds = np.array(stratified_folds(groups, labels, 5, seed=42))
    y = np.array(labels)
    assert _groups_whole(folds, groups)
    assert all(_spread_ok(folds, y[:, j], groups, 5) for j in range(3))
    assert _spread_ok(folds, y.sum(axis=1) == 0, groups, 5)  # the rows with no positive, too
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() / sizes.min() < 1.15


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_folds_balance_the_target_distribution(seed):
    groups, bases, rng = _patients(seed)
    target = [float(b + rng.normal() * 0.5) for b in bases]
    folds = np.array(stratified_folds(groups, target, 5, seed=42))
    assert _groups_whole(folds, groups)
    assert all(_spread_ok(folds, decile, groups, 5) for decile in _deciles(target))
    two = [[t, float(rng.normal())] for t in target]  # several float columns: each column's distribution
    folds = np.array(stratified_folds(groups, two, 5, seed=42))
    assert _groups_whole(folds, groups)
    assert all(_spread_ok(folds, decile, groups, 5) for column in np.array(two).T for decile in _deciles(column))


def _deciles(values):
    """Which samples fall in each tenth of the values' distribution."""
    tenth = np.searchsorted(np.percentile(values, np.arange(10, 100, 10)), values, side="right")
    return [tenth == d for d in range(10)]


def test_soft_label_folds_balance_the_dominant_class():
    groups, bases, rng = _patients(3)
    soft = [list(rng.dirichlet([0.5 + abs(b), 1.0, 0.3])) for b in bases]
    folds = np.array(stratified_folds(groups, soft, 4, seed=42))
    dominant = np.argmax(soft, axis=1)
    assert _groups_whole(folds, groups)
    assert all(_spread_ok(folds, dominant == c, groups, 4) for c in range(3))


# --- errors: one line naming the column and the file ------------------------------------------------------------

def _one_line(err):
    return "\n" not in str(err.value)


def test_errors_name_the_column_and_the_file(demo_source, label_csv, tmp_path, converted):
    def run(label_col):
        return convert(demo_source.images, label_csv, tmp_path / "out", sizes=(SHARD_SIZE,), label_col=label_col,
                       workers=1, progress=False)

    with pytest.raises(KitError, match=r"train\.csv: no column 'nope'") as err:
        run("y0,nope,y1")
    assert _one_line(err)
    with pytest.raises(KitError, match=r"train\.csv: label column 'diagnosis' holds text \('.+' on line 2\)") as err:
        run("y0,diagnosis")
    assert _one_line(err)
    with pytest.raises(KitError, match=r"--label-col 'y0,,y1'"):
        run("y0,,y1")
    with pytest.raises(KitError, match=r"--label-col 'y0,y0'"):
        run(["y0", "y0"])
    assert main(["convert", str(demo_source.images), str(label_csv), str(tmp_path / "cli"), "--label-col",
                 "f0,missing"]) == 2
    folder = _foreign_copy(converted("tfrecord", ",".join(BITS)), tmp_path / "foreign")
    with pytest.raises(KitError, match=r"/\w+\d\d-\d+\.tfrec: --label-col 'nope' is not a feature") as err:
        index([str(folder)], label_col="y0,nope")
    assert _one_line(err)
    with pytest.raises(KitError, match=r"/\w+\d\d-\d+\.tfrec: --label-col 'sex' holds text") as err:
        index([str(folder)], label_col="y0,sex")
    assert _one_line(err)


@pytest.mark.parametrize("label_col", [",".join(BITS), "f0"])
def test_class_weights_refuse_labels_that_are_not_one_class_column(converted, label_col):
    m = converted("tfrecord", label_col)
    assert m.class_column() is None
    with pytest.raises(KitError, match=r"^data\.sampling\.class_weights needs one label column of classes") as err:
        ShardDataset(m, "train", 0, batch_size=8, train_options=TrainOptions(class_weights={"1": 3.0}))
    assert _one_line(err) and label_col.split(",")[0] in str(err.value)


def test_pseudo_labels_refuse_several_label_columns(converted, tmp_path):
    from kitpkg.shards.pseudo import write_labelled_sets

    with pytest.raises(KitError, match="pseudo-labels are one class per sample.*y0, y1, y2"):
        write_labelled_sets(tmp_path / "pseudo", converted("tfrecord", ",".join(BITS)), {None: ({}, {})})


def test_extra_training_sets_need_the_same_label_columns(converted, tfrecord_manifest):
    bits = converted("tfrecord", ",".join(BITS))
    with pytest.raises(KitError, match="label columns target differ from those of .*y0, y1, y2"):
        ShardDataset(bits, "train", 0, extra=[tfrecord_manifest], batch_size=8)


def test_model_meta_refuses_any_of_several_label_columns(converted, label_csv):
    from kitpkg.data.meta import check_meta_inputs

    manifest = converted("tfrecord", ",".join(BITS))
    with pytest.raises(KitError, match=r"model.meta column 'y1' is a label column"):
        check_meta_inputs(["y1"], manifest)
    check_meta_inputs(["age_approx"], manifest)  # a property of the sample, seen with both values of every label
