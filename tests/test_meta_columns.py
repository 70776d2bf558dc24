"""model.meta, loader side: the selected manifest columns per sample as batch["meta"] (B×width float), encoded by a
MetaEncoder fitted on the training folds only and stored as plain JSON; a shard set without a column is refused."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from kitpkg.config import config_from_dict
from kitpkg.data.dataset import ShardDataset
from kitpkg.data.loader import ShardLoader
from kitpkg.data.meta import MetaEncoder, read_meta_encoder, write_meta_encoder
from kitpkg.errors import KitError

META = ["sex", "age_approx", "anatom_site_general_challenge"]


def test_encoding_one_hot_scaled_and_missing_flags():
    rows = [{"sex": "male", "age": 40.0}, {"sex": "female", "age": 60.0}, {"sex": "", "age": None}]
    enc = MetaEncoder.fit(["sex", "age"], rows)
    assert enc.width == 3 + 2  # female, male, missing | scaled age, missing
    assert enc.transform({"sex": "male", "age": 50.0}) == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert enc.transform({"sex": "female", "age": 60.0}) == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert enc.transform({"sex": "nan", "age": float("nan")}) == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert enc.transform({"sex": "other"})[:3] == [0.0, 0.0, 1.0], "unseen at fit time counts as missing"
    again = MetaEncoder.from_state(json.loads(json.dumps(enc.state_dict())))
    assert again == enc and again.transform(rows[0]) == enc.transform(rows[0])
    with pytest.raises(KitError, match="not one MetaEncoder.state_dict"):
        MetaEncoder.from_state({"columns": [{"name": "x", "kind": "pickle"}]})


def _csv_rows(demo_source):
    with open(demo_source.train_csv, newline="") as f:
        return {r["image_name"]: r for r in csv.DictReader(f)}


def test_batches_carry_the_encoded_columns(any_manifest, demo_source, fold_datamodule):
    config = config_from_dict({"data": {"shards": any_manifest.root, "image_size": 64, "batch_size": 5,
                                        "num_workers": 0}, "model": {"meta": META}})
    dm = fold_datamodule(config, 0)
    enc, rows = dm.fitted_meta(), _csv_rows(demo_source)
    assert enc.names == META
    train_ids = [i for b in dm.train_dataloader() for i in b["id"]]
    expected = MetaEncoder.fit(META, [rows[i] for i in sorted(set(train_ids))])
    assert enc.width == expected.width
    got_age = next(c for c in enc.columns if c["name"] == "age_approx")
    want_age = next(c for c in expected.columns if c["name"] == "age_approx")
    assert math.isclose(got_age["mean"], want_age["mean"]) and math.isclose(got_age["std"], want_age["std"]), \
        "fitted on the training folds only"
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert batch["meta"].dtype == torch.float32 and batch["meta"].shape == (len(batch["id"]), enc.width)
    batch = next(iter(dm.val_dataloader()))
    for row, sample_id in zip(batch["meta"].tolist(), batch["id"]):
        assert row == pytest.approx(enc.transform({k: _typed(rows[sample_id][k]) for k in META}), abs=1e-6)


def _typed(text):
    try:
        return float(text)
    except ValueError:
        return text


def test_meta_through_worker_processes(tfrecord_manifest):
    enc = MetaEncoder.fit(META, [{"sex": "male", "age_approx": 50.0, "anatom_site_general_challenge": "torso"}])
    ds = ShardDataset(tfrecord_manifest, "train", 1, batch_size=4, meta=enc)
    batches = list(ShardLoader(ds, num_workers=2))
    assert len(batches) == len(ds) and all(b["meta"].shape == (len(b["id"]), enc.width) for b in batches)


def test_shards_without_the_column_are_refused(tfrecord_manifest):
    enc = MetaEncoder.fit(["sex", "skin_tone"], [])
    with pytest.raises(KitError, match=r"model.meta column 'skin_tone' is not in the shards"):
        ShardDataset(tfrecord_manifest, "train", 0, meta=enc)


def test_encoder_file_round_trip(tmp_path):
    enc = MetaEncoder.fit(["sex"], [{"sex": "male"}])
    write_meta_encoder(tmp_path / "meta.json", enc)
    assert read_meta_encoder(tmp_path / "meta.json") == enc
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KitError, match="bad.json: cannot read the meta encoder"):
        read_meta_encoder(tmp_path / "bad.json")


@pytest.mark.parametrize("column, why", [
    ("target", "is the label column"), ("fold", "is the fold column"), ("image_name", "is the id column"),
    ("patient_id", "is the group column"), ("diagnosis", "has no value in the test split"),
    ("benign_malignant", "has no value in the test split")])
def test_leaking_or_test_absent_columns_are_refused_before_a_run_dir_is_written(tfrecord_manifest, tmp_path,
                                                                                column, why):
    from conftest import write_train_config
    from kitpkg.config import load_config
    from kitpkg.train.cv import open_run

    config = load_config(write_train_config(tmp_path, tfrecord_manifest), overrides=[f"model.meta=[sex, {column}]"])
    with pytest.raises(KitError, match=rf"^model.meta column '{column}' {why}\b[^\n]*drop it from model.meta$"):
        open_run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config = load_config(write_train_config(tmp_path, tfrecord_manifest), overrides=[f"model.meta={META}"])
    open_run(config, tmp_path / "ok")  # the recipe's columns pass


def test_a_column_whose_values_determine_the_label_is_a_relabelling():
    from kitpkg.data.meta import columns_without_values, relabellings

    rows = [{"target": t, "bm": ["benign", "malignant"][t], "sex": s, "size": 1000 + i, "dx": d}
            for i, (t, s, d) in enumerate([(0, "m", "nevus"), (1, "f", "melanoma"), (0, "f", "lentigo"),
                                           (1, "m", "melanoma"), (0, "m", "nevus"), (0, "f", "nevus")])]
    assert relabellings(["bm", "sex", "size", "dx"], "target", rows) == {"bm": (2, 6), "dx": (3, 6)}, \
        "a 1:1 relabelling and a finer one are leaks; a mixed column and a unique measurement are not"
    assert relabellings(["bm"], "target", [r for r in rows if r["target"] == 0]) == {}, "one class: nothing shown"
    assert columns_without_values(["sex", "dx"], [{"sex": "m", "dx": ""}, {"sex": "f"}]) == ["dx"]


def test_non_finite_numbers_are_refused_at_fit_naming_column_and_count():
    rows = [{"age": 40.0, "log_size": float("inf")}, {"age": 50.0, "log_size": "-inf"}, {"age": 60.0, "log_size": 2.0}]
    with pytest.raises(KitError, match=r"^model.meta column 'log_size': 2 training sample\(s\) hold a non-finite "):
        MetaEncoder.fit(["age", "log_size"], rows)
    enc = MetaEncoder.fit(["age"], rows)
    assert enc.transform({"age": float("inf")}) == [0.0, 1.0], "an unseen inf (test rows) encodes as missing"
    assert json.loads(json.dumps(enc.state_dict(), allow_nan=False)), "meta.json holds no Infinity"
    assert MetaEncoder.fit(["site"], [{"site": "inf"}, {"site": "torso"}]).width == 3, "text: just a category"
