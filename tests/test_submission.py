"""The submission is the competition's: the sample's columns, ids and row order, each task's prediction where the
sample puts it (one test per competition layout of issue 19), and the refusals of samples that do not fit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kitpkg.errors import KitError
from kitpkg.submission import read_sample, write_submission

# sample rows are listed in another order than the predictions come in: the written file must follow the sample
IDS = ["t3", "t1", "t0", "t2"]
SAMPLE_IDS = ["t0", "t1", "t2", "t3"]
ROWS = [IDS.index(i) for i in SAMPLE_IDS]  # prediction row of each sample row


def make_sample(tmp_path: Path, header: str, ids=SAMPLE_IDS, filler: str = "0") -> Path:
    """A sample_submission.csv with `header` and one placeholder row per id."""
    width = header.count(",")
    path = tmp_path / "sample_submission.csv"
    path.write_text("\n".join([header] + [",".join([i] + [filler] * width) for i in ids]) + "\n")
    return path


def read_back(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def probabilities(columns: int, seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).random((len(IDS), columns)) + 0.05
    return raw / raw.sum(axis=1, keepdims=True)


def written(tmp_path, header, kind, pred, ids=IDS, **kwargs) -> pd.DataFrame:
    sample = make_sample(tmp_path, header)
    out = write_submission(tmp_path / "submission.csv", kind, ids, pred, sample=sample, **kwargs)
    frame = read_back(out)
    assert list(frame.columns) == header.split(",")
    assert frame.iloc[:, 0].tolist() == SAMPLE_IDS
    return frame


def test_cassava_multiclass_writes_the_class_id(tmp_path):
    pred = probabilities(5, 0)
    frame = written(tmp_path, "image_id,label", "multiclass", pred)  # integer labels: no names
    assert frame["label"].tolist() == [str(int(np.argmax(pred[r]))) for r in ROWS]


def test_plant_pathology_writes_one_probability_column_per_class(tmp_path):
    names = ["healthy", "multiple_diseases", "rust", "scab"]
    pred = probabilities(4, 1)
    frame = written(tmp_path, "image_id,healthy,multiple_diseases,rust,scab", "multiclass", pred, names=names)
    np.testing.assert_allclose(frame[names].astype(float).to_numpy(), pred[ROWS], rtol=1e-8)


def test_ubc_ocean_multiclass_writes_the_class_name(tmp_path):
    names = ["CC", "EC", "HGSC", "LGSC", "MC"]
    pred = np.eye(5)[[2, 0, 4, 1]] * 0.6 + 0.08
    frame = written(tmp_path, "id,label", "multiclass", pred, names=names)
    by_id = dict(zip(frame["id"], frame["label"]))
    assert by_id == {"t3": "HGSC", "t1": "CC", "t0": "MC", "t2": "EC"}


def test_ranzcr_multilabel_writes_one_probability_column_per_label(tmp_path):
    labels = ["ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal", "NGT - Borderline",
              "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal", "CVC - Borderline", "CVC - Normal",
              "Swan Ganz Catheter Present"]
    pred = np.random.default_rng(2).random((4, 11))
    frame = written(tmp_path, "StudyInstanceUID," + ",".join(labels), "multilabel", pred, names=labels)
    np.testing.assert_allclose(frame[labels].astype(float).to_numpy(), pred[ROWS], rtol=1e-8)


def test_planet_multilabel_writes_space_separated_label_names(tmp_path):
    labels = ["agriculture", "clear", "cloudy", "haze", "primary", "water"]
    pred = np.array([[0.9, 0.8, 0.1, 0.0, 0.95, 0.3],   # t3
                     [0.1, 0.0, 0.7, 0.2, 0.1, 0.1],    # t1
                     [0.0, 0.1, 0.1, 0.1, 0.1, 0.1],    # t0: nothing passes
                     [0.2, 0.6, 0.0, 0.4, 0.6, 0.25]])  # t2
    thresholds = np.array([0.5, 0.5, 0.5, 0.35, 0.5, 0.2])
    frame = written(tmp_path, "image_name,tags", "multilabel", pred, names=labels, thresholds=thresholds)
    by_id = dict(zip(frame["image_name"], frame["tags"]))
    assert by_id == {"t3": "agriculture clear primary water", "t1": "cloudy", "t0": "",
                     "t2": "clear haze primary water"}


def test_petfinder_regression_writes_the_target_column(tmp_path):
    pred = np.array([31.5, 72.25, 18.0, 44.125])
    frame = written(tmp_path, "Id,Pawpularity", "regression", pred, names=["Pawpularity"])
    np.testing.assert_allclose(frame["Pawpularity"].astype(float).to_numpy(), pred[ROWS])


def test_regression_with_several_targets_fills_them_by_name(tmp_path):
    pred = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    frame = written(tmp_path, "id,height,width", "regression", pred, names=["width", "height"])
    np.testing.assert_allclose(frame["width"].astype(float).to_numpy(), pred[ROWS, 0])
    np.testing.assert_allclose(frame["height"].astype(float).to_numpy(), pred[ROWS, 1])


def test_aptos_ordinal_writes_the_class_cut_by_the_fitted_cuts(tmp_path):
    pred = np.array([0.62, 2.9, 1.1, 3.5])
    cuts = np.array([0.7, 1.2, 2.9, 3.6])  # 0.62 -> 0, 2.9 on a cut -> 3, 1.1 -> 1, 3.5 -> 3
    frame = written(tmp_path, "id_code,diagnosis", "ordinal", pred, thresholds=cuts)
    assert dict(zip(frame["id_code"], frame["diagnosis"])) == {"t3": "0", "t1": "3", "t0": "1", "t2": "3"}


def test_ordinal_without_fitted_cuts_rounds(tmp_path):
    pred = np.array([-0.4, 1.49, 1.5, 9.0])
    frame = written(tmp_path, "id_code,diagnosis", "ordinal", pred, names=["0", "1", "2", "3", "4"])
    assert dict(zip(frame["id_code"], frame["diagnosis"])) == {"t3": "0", "t1": "1", "t0": "2", "t2": "4"}


def test_hms_soft_writes_each_vote_column_by_name(tmp_path):
    names = ["gpd_vote", "grda_vote", "lpd_vote", "lrda_vote", "other_vote", "seizure_vote"]  # prediction order
    header = "eeg_id,seizure_vote,lpd_vote,gpd_vote,lrda_vote,grda_vote,other_vote"  # the sample's own order
    pred = probabilities(6, 3)
    frame = written(tmp_path, header, "soft", pred, names=names)
    for c, name in enumerate(names):
        np.testing.assert_allclose(frame[name].astype(float).to_numpy(), pred[ROWS, c], rtol=1e-8)


def test_isic_2024_binary_writes_the_positive_probability(tmp_path):
    pred = np.array([0.91, 0.002, 1e-7, 0.5])
    frame = written(tmp_path, "isic_id,target", "binary", pred)
    np.testing.assert_allclose(frame["target"].astype(float).to_numpy(), pred[ROWS], rtol=1e-8)


def test_binary_with_a_fitted_threshold_writes_the_decided_class(tmp_path):
    pred = np.array([0.91, 0.2, 0.35, 0.3])
    frame = written(tmp_path, "id,label", "binary", pred, names=["benign", "malignant"], thresholds=0.3)
    assert dict(zip(frame["id"], frame["label"])) == {"t3": "malignant", "t1": "benign", "t0": "malignant",
                                                      "t2": "malignant"}


def test_ids_keep_their_text(tmp_path):
    ids = ["007", "1e3", "NA", "12.50"]  # leading zeros, float-looking and NA-looking ids stay as written
    sample = make_sample(tmp_path, "id,target", ids=ids[::-1])
    out = write_submission(tmp_path / "s.csv", "binary", ids, np.array([0.1, 0.2, 0.3, 0.4]), sample=sample)
    assert read_back(out)["id"].tolist() == ids[::-1]


def test_row_order_follows_the_sample_not_the_predictions(tmp_path):
    sample = make_sample(tmp_path, "isic_id,target", ids=["t2", "t0", "t3", "t1"])
    pred = np.array([0.3, 0.1, 0.0, 0.2])  # t3, t1, t0, t2
    frame = read_back(write_submission(tmp_path / "s.csv", "binary", IDS, pred, sample=sample))
    assert frame["isic_id"].tolist() == ["t2", "t0", "t3", "t1"]
    np.testing.assert_allclose(frame["target"].astype(float).to_numpy(), [0.2, 0.0, 0.3, 0.1])


def test_sample_ids_that_differ_from_the_predictions_are_refused(tmp_path):
    sample = make_sample(tmp_path, "image_id,label", ids=["t0", "t1", "t2", "t9"])
    with pytest.raises(KitError, match=r"sample_submission\.csv.*1 of its ids have no prediction.*'t9'.*"
                                       r"1 predicted ids are not in it.*'t3'"):
        write_submission(tmp_path / "s.csv", "multiclass", IDS, probabilities(3, 0), sample=sample)
    assert not (tmp_path / "s.csv").exists()


def test_columns_that_are_no_class_are_refused(tmp_path):
    sample = make_sample(tmp_path, "image_id,healthy,blight,rust,scab")
    with pytest.raises(KitError, match=r"sample_submission\.csv: columns \['blight'\] are no class.*"
                                       r"\['multiple_diseases'\] have no column"):
        write_submission(tmp_path / "s.csv", "multiclass", IDS, probabilities(4, 0),
                         names=["healthy", "multiple_diseases", "rust", "scab"], sample=sample)


@pytest.mark.parametrize("kind,header,names,pred", [
    ("multilabel", "id,cat,dog", ["cat", "dog", "fox"], np.full((4, 3), 0.5)),  # a label without a column
    ("multiclass", "id,dog", ["cat", "dog", "fox"], np.full((4, 3), 1 / 3)),  # one class's column only
    ("ordinal", "id,a,b", None, np.zeros(4)),
    ("regression", "id,price", ["height", "width"], np.zeros((4, 2))),
])
def test_samples_that_do_not_fit_the_task_are_refused(tmp_path, kind, header, names, pred):
    sample = make_sample(tmp_path, header)
    with pytest.raises(KitError, match=r"^\S*sample_submission\.csv: "):
        write_submission(tmp_path / "s.csv", kind, IDS, pred, names=names, thresholds=[0.5] if kind == "ordinal"
                         else None, sample=sample)


def test_non_finite_predictions_are_refused_and_nothing_is_written(tmp_path):
    sample = make_sample(tmp_path, "isic_id,target")
    out = tmp_path / "submission.csv"
    with pytest.raises(KitError, match=r"submission\.csv: 1 of 4 test predictions are not finite \(ids \['t1'\]\)"):
        write_submission(out, "binary", IDS, np.array([0.1, np.nan, 0.2, 0.3]), sample=sample)
    assert not out.exists()


@pytest.mark.parametrize("text,match", [("only_id\nt0\n", "needs an id column and at least one prediction"),
                                        ("id,label\nt0,1\nt0,2\n", "more than once")])
def test_malformed_samples_are_refused(tmp_path, text, match):
    path = tmp_path / "sample_submission.csv"
    path.write_text(text)
    with pytest.raises(KitError, match=match):
        read_sample(path)


def test_a_missing_sample_is_refused_by_name(tmp_path):
    with pytest.raises(KitError, match=r"nope\.csv: no such file; set output\.sample_submission"):
        write_submission(tmp_path / "s.csv", "binary", IDS, np.zeros(4), sample=tmp_path / "nope.csv")


@pytest.mark.parametrize("kind,pred", [("binary", np.array([0.25, 0.5, 1e-9, 0.75])),
                                       ("multiclass", np.eye(3)[[2, 0, 1, 1]] * 0.7 + 0.1)])
def test_without_a_sample_the_file_is_todays_id_prediction(tmp_path, kind, pred):
    from kitpkg.tables import write_csv

    # the kit's own layout: id_col, pred_col (binary: P(positive); multiclass: the class index)
    write_csv(pd.DataFrame({"image_name": IDS, "target": pred if kind == "binary" else pred.argmax(1)}),
              tmp_path / "today.csv")
    ours = write_submission(tmp_path / "ours.csv", kind, IDS, pred, names=["a", "b", "c"] if kind != "binary" else None,
                            id_col="image_name", pred_col="target")
    assert ours.read_text() == (tmp_path / "today.csv").read_text()


def test_a_sample_saved_with_a_byte_order_mark_keeps_its_id_column_name(tmp_path):
    path = tmp_path / "sample_submission.csv"
    path.write_bytes("\ufeffisic_id,target\nt0,0\n".encode("utf-8"))
    assert read_sample(path).id_col == "isic_id"
