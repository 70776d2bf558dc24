"""Photo-like benchmark images made in the run from the two photos that ship with scikit-learn (no download).

Flat colours decode far faster than photos and pure noise far slower (measured with simplejpeg), so benchmarks use
random crops, rotations, colour jitter and a little noise of real photos.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator, List

import numpy as np
from PIL import Image, ImageEnhance


def _sources() -> List[Image.Image]:
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    return [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]


def photo_images(n: int, width: int, height: int, seed: int = 0) -> Iterator[Image.Image]:
    """Yield `n` photo-like RGB images of width × height."""
    rng = np.random.default_rng(seed)
    sources = _sources()
    for i in range(n):
        src = sources[i % len(sources)].rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR, expand=False)
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.45, 0.8)), int(h * rng.uniform(0.45, 0.8))
        x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        img = src.crop((x, y, x + cw, y + ch)).resize((width, height), Image.BICUBIC)
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.6, 1.4)))
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.8, 1.2)))
        arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 3, (height, width, 3)).astype(np.int16)
        yield Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_photo_jpegs(out: str, n: int, width: int, height: int, quality: int = 90, seed: int = 0) -> List[str]:
    """Write `n` photo-like JPEGs into `out` (reused when already there); return their paths."""
    os.makedirs(out, exist_ok=True)
    expected = [os.path.join(out, f"img_{i:06d}.jpg") for i in range(n)]
    if all(os.path.exists(p) for p in expected):  # a cached set: skip the (slow) generation entirely
        return expected
    paths = []
    for i, img in enumerate(photo_images(n, width, height, seed)):
        path = os.path.join(out, f"img_{i:06d}.jpg")
        if not os.path.exists(path):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            with open(path + ".tmp", "wb") as f:
                f.write(buf.getvalue())
            os.replace(path + ".tmp", path)
        paths.append(path)
    return paths
