"""Demo data: ISIC-like CSVs, photo-sized JPEGs, ~10 % positives that look different, deterministic from the seed."""
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


def test_positives_differ_visibly(demo_source):
    train = pd.read_csv(demo_source.train_csv)

    def dark_fraction(name):  # share of clearly dark pixels: positives are bigger and darker
        pixels = np.asarray(Image.open(demo_source.images / "train" / f"{name}.jpg").convert("L"))
        return (pixels < 90).mean()

    pos = [dark_fraction(n) for n in train.image_name[train.target == 1]]
    neg = [dark_fraction(n) for n in train.image_name[train.target == 0]]
    assert min(pos) > max(neg)  # separable by one threshold: learnable even at 64 px


def test_deterministic_from_seed(tmp_path):
    a = make_demo_data(tmp_path / "a", n_patients=3, images_per_patient=2, n_test=2, width=96, height=64, seed=5)
    b = make_demo_data(tmp_path / "b", n_patients=3, images_per_patient=2, n_test=2, width=96, height=64, seed=5)
    make_demo_data(tmp_path / "c", n_patients=3, images_per_patient=2, n_test=2, width=96, height=64, seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert a.train_csv.read_text() == b.train_csv.read_text()
