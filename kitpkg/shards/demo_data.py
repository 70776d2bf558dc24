"""A synthetic, learnable "skin lesion" dataset made locally (no download): JPEGs + ISIC-like train.csv and test.csv.

Every lesion has a hidden "severity": negatives ~ N(0, 1), positives (~10 %) ~ N(SEPARATION, 1). Size, darkness,
border irregularity and a blue-grey veil all grow with it, so a small CNN can learn the task at 64 px -- but, as on real
ISIC data, some melanomas are subtle and some benign moles are large and dark, so no model can be perfect (the best
possible AUC is Φ(SEPARATION / √2) ≈ 0.92). Everything is a pure function of the seed.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np
import simplejpeg

from .. import fsutil
from ..errors import KitError

TRAIN_COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
                 "benign_malignant", "target"]
TEST_COLUMNS = TRAIN_COLUMNS[:5]
_SITES = ["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital"]
_BENIGN = ["unknown", "nevus", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis"]
POSITIVE_RATE = 0.1
SEPARATION = 2.0  # class gap on the severity scale, in standard deviations (see the module docstring)


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo dataset lives: a folder of JPEGs (train/ and test/ inside) and the two CSVs."""

    images: Path
    train_csv: Path
    test_csv: Path


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly (cheap, photo-like shading)."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    ys, xs = np.linspace(0, cells, h, dtype=np.float32), np.linspace(0, cells, w, dtype=np.float32)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def render_lesion(rng: np.random.Generator, width: int, height: int, positive: bool, skin: np.ndarray) -> np.ndarray:
    """One H×W×3 uint8 image: shaded skin, a few hairs, and a lesion whose look follows a severity drawn per class."""
    severity = rng.normal(SEPARATION if positive else 0.0, 1.0)
    u = float(np.clip((severity + 1.5) / (SEPARATION + 3.0), 0.0, 1.0))  # 0: small even mole … 1: large, dark, ragged
    # draw the smooth structure at half resolution (4× fewer pixels), upsample, then add full-resolution sensor noise
    h, w = (height + 1) // 2, (width + 1) // 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 + 0.08 * _smooth_noise(rng, h, w, 4)[..., None]
    img = skin[None, None, :].astype(np.float32) * shade
    # lesion: a blob whose radius varies with angle; severe ones get strong high harmonics (irregular border)
    side = min(h, w)
    radius = side * float(np.clip(0.10 + 0.22 * u + rng.normal(0, 0.025), 0.07, 0.36))
    cy, cx = h / 2 + rng.uniform(-0.12, 0.12) * h, w / 2 + rng.uniform(-0.12, 0.12) * w
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = np.zeros_like(angle)
    for k in range(2, 8):
        amp = rng.uniform(0.0, 0.03) + 0.13 * u * u * rng.uniform(0.4, 1.0)
        wobble += amp * np.cos(k * angle + rng.uniform(0, 2 * math.pi))
    dist = np.hypot(yy - cy, xx - cx) / (radius * (1 + wobble))
    mask = np.clip((1.0 - dist) * 6.0, 0, 1)[..., None]  # soft edge
    texture = _smooth_noise(rng, h, w, 12)[..., None]
    light = np.float32([150, 100, 70]) * rng.uniform(0.8, 1.05)
    dark = np.float32([70, 42, 30]) * rng.uniform(0.6, 1.0)
    color = light * (1 - u) + dark * u + (10 + 15 * u) * texture
    veil = np.clip(_smooth_noise(rng, h, w, 6), 0, 1)[..., None] * 0.7 * float(np.clip((u - 0.55) / 0.45, 0, 1))
    color = color * (1 - veil) + np.float32([95, 105, 135]) * veil  # blue-grey patches inside severe lesions
    img = img * (1 - mask) + color * mask
    for _ in range(int(rng.integers(0, 4))):  # hairs: dark thin lines
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        theta = rng.uniform(0, math.pi)
        d = np.abs((xx - x0) * math.sin(theta) - (yy - y0) * math.cos(theta))
        img = np.where((d < max(0.7, side / 600))[..., None], img * 0.35, img)
    img = cv2.resize(img.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    img += rng.integers(-6, 7, img.shape, dtype=np.int8)
    return np.clip(img, 0, 255).astype(np.uint8)


def _rows(rng: np.random.Generator, n_patients: int, per_patient: int, n_test: int) -> Tuple[List[Dict], List[Dict]]:
    n_train = n_patients * per_patient
    n_pos = max(1, round(POSITIVE_RATE * n_train))
    positives = set(rng.choice(n_train, size=n_pos, replace=False).tolist())
    train, test = [], []
    for p in range(n_patients):
        patient = {"patient_id": f"IP_{1000000 + p * 7919 % 9000000:07d}", "sex": str(rng.choice(["male", "female"])),
                   "age_approx": float(rng.integers(4, 18) * 5)}
        for j in range(per_patient):
            i = p * per_patient + j
            site = str(rng.choice(_SITES)) if rng.uniform() > 0.03 else ""  # ISIC leaves some sites empty
            pos = i in positives
            train.append({"image_name": f"ISIC_{i * 37 + 10000:07d}", **patient,
                          "anatom_site_general_challenge": site,
                          "diagnosis": "melanoma" if pos else str(rng.choice(_BENIGN)),
                          "benign_malignant": "malignant" if pos else "benign", "target": int(pos)})
    for t in range(n_test):
        test.append({"image_name": f"ISIC_{9000000 + t:07d}", "patient_id": f"IP_{9000000 + t // 2:07d}",
                     "sex": str(rng.choice(["male", "female"])), "age_approx": float(rng.integers(4, 18) * 5),
                     "anatom_site_general_challenge": str(rng.choice(_SITES)),
                     "_positive": bool(rng.uniform() < POSITIVE_RATE)})
    return train, test


def _write_csv(path: Path, rows: List[Dict], columns: List[str]) -> None:
    with fsutil.atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def make_demo_data(out: Union[str, Path], n_patients: int = 120, images_per_patient: int = 4, n_test: int = 60,
                   width: int = 768, height: int = 512, seed: int = 0, quality: int = 90,
                   overwrite: bool = False) -> DemoPaths:
    """Write the demo dataset under `out` (images/train, images/test, train.csv, test.csv) and return its paths.

    A train.csv or test.csv already in `out` (the user's own data?) is refused with a KitError unless `overwrite`.
    """
    for option, value, least in (("--patients", n_patients, 1), ("--images-per-patient", images_per_patient, 1),
                                 ("--test-images", n_test, 0), ("--width", width, 16), ("--height", height, 16)):
        if value < least:
            raise KitError(f"demo-data {option} must be ≥ {least}, not {value}")
    out = fsutil.ensure_folder(out, "demo-data folder")
    for name in ("train.csv", "test.csv"):
        if (out / name).exists() and not overwrite:
            raise KitError(f"{out / name} already exists; demo-data would replace it (and the images beside it): "
                           "choose another folder, or pass --overwrite")
    rng = np.random.default_rng(seed)
    train, test = _rows(rng, n_patients, images_per_patient, n_test)
    skins = rng.uniform([200, 150, 125], [240, 195, 170], (n_patients + n_test, 3))
    jobs = [("train", r, r["target"] == 1, skins[k // images_per_patient]) for k, r in enumerate(train)]
    jobs += [("test", r, r["_positive"], skins[n_patients + k]) for k, r in enumerate(test)]
    for k, (split, row, positive, skin) in enumerate(jobs):
        path = out / "images" / split / f"{row['image_name']}.jpg"
        img_rng = np.random.default_rng([seed, k])  # per-image stream: any image can be regenerated alone
        pixels = render_lesion(img_rng, width, height, positive, skin)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # complete files only under the final name; no fsync: regenerable
        tmp.write_bytes(simplejpeg.encode_jpeg(pixels, quality=quality, colorsubsampling="420"))
        os.replace(tmp, path)
    _write_csv(out / "train.csv", train, TRAIN_COLUMNS)
    _write_csv(out / "test.csv", test, TEST_COLUMNS)
    return DemoPaths(images=out / "images", train_csv=out / "train.csv", test_csv=out / "test.csv")
