"""Demo data: ISIC-like CSVs, photo-sized JPEGs, ~10 % positives that are learnable but overlap the negatives,
deterministic from the seed."""
import hashlib

import numpy as np
import pandas as pd
from PIL import Image

from kitpkg.shards.demo_data import TEST_COLUMNS, TRAIN_COLUMNS, make_demo_data


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_layout_columns_and_patients(demo_source):
    train, test = pd.read_csv(demo_source.train_csv), pd.read_csv(demo_source.test_csv)
    assert list(train.columns) == TRAIN_COLUMNS and list(test.columns) == TEST_COLUMNS
    assert len(train) == 48 and len(test) == 10 and train.patient_id.nunique() == 16
    assert train.groupby("patient_id").size().eq(3).all()
    assert set(train.target) == {0, 1} and 0.05 <= train.target.mean() <= 0.15
    assert (train.benign_malignant == "malignant").eq(train.target == 1).all()
    for name in list(train.image_name) + list(test.image_name):
        split = "train" if name in set(train.image_name) else "test"
        assert (demo_source.images / split / f"{name}.jpg").exists()


def test_images_are_photo_sized_jpegs(demo_source):
    img = Image.open(next((demo_source.images / "train").glob("*.jpg")))
    assert img.format == "JPEG" and img.size == (320, 240) and img.mode == "RGB"


def test_positives_are_learnable_but_not_perfectly_separable(tmp_path):
    # enough images for a stable estimate, small enough to be quick: 50 patients × 4 images at 128×96
    paths = make_demo_data(tmp_path, n_patients=50, images_per_patient=4, n_test=0, width=128, height=96, seed=0)
    train = pd.read_csv(paths.train_csv)

    def dark_fraction(name):  # share of clearly dark pixels: severe lesions are bigger and darker
        pixels = np.asarray(Image.open(paths.images / "train" / f"{name}.jpg").convert("L"))
        return (pixels < 90).mean()

    pos = [dark_fraction(n) for n in train.image_name[train.target == 1]]
    neg = [dark_fraction(n) for n in train.image_name[train.target == 0]]
    auc = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])  # Mann-Whitney: P(positive darker)
    assert 0.7 < auc < 0.97, auc  # one crude feature already learns a lot, yet no threshold separates the classes
    assert min(pos) < np.median(neg) and max(neg) > np.median(pos), "subtle melanomas and dark benign moles exist"


def test_deterministic_from_seed(tmp_path):
    a = make_demo_data(tmp_path / "a", n_patients=3, images_per_patient=2, n_test=2, width=96, height=64, seed=5)
    b = make_demo_data(tmp_path / "b", n_patients=3, images_per_patient=2, n_test=2, width=96, height=64, seed=5)
    make_demo_data(tmp_path / "c", n_patients=3, images_per_patient=2, n_test=2, width=96, height=64, seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert a.train_csv.read_text() == b.train_csv.read_text()


def test_an_existing_train_csv_is_never_replaced_silently(tmp_path, capsys):
    from kitpkg.cli import main

    (tmp_path / "train.csv").write_text("image_name,target\nmine,1\n")
    small = ["--patients", "2", "--images-per-patient", "1", "--test-images", "1", "--width", "32", "--height", "32"]
    assert main(["demo-data", str(tmp_path), *small]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "train.csv") in err and "--overwrite" in err, err
    assert (tmp_path / "train.csv").read_text() == "image_name,target\nmine,1\n"
    assert not (tmp_path / "images").exists(), "refused before any image is written"
    assert main(["demo-data", str(tmp_path), *small, "--overwrite"]) == 0
    assert (tmp_path / "train.csv").read_text().startswith("image_name,patient_id")
