"""Image bytes -> HWC uint8 pixels, fast: simplejpeg (libjpeg-turbo) with DCT scaling, cv2 bilinear resize.

Steps 2-4 of a worker's batch (the list at the top of dataset.py): `decode_image`, then per sample `resize` (into the
batch buffer).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import cv2
import numpy as np
import simplejpeg

from ..shards.imaging import dct_min_size

Size = Tuple[int, int]  # (height, width)


def as_size(size: Union[None, int, Tuple[int, int]]) -> Optional[Size]:
    """An int side or an (height, width) pair as (height, width); None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def decode_image(data: bytes, size: Optional[Size] = None) -> np.ndarray:
    """Decode JPEG (or PNG/WebP, via cv2) bytes to RGB HWC uint8, shrunk by DCT scaling towards `size` when possible.

    Raises ValueError when the bytes are not a decodable image.
    """
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        # DCT scaling (1/2, 1/4, 1/8) when the stored image is ≥ 2× the target: the same rule as `kitpkg convert`
        min_w, min_h = dct_min_size(w, h, size[1], size[0]) if size else (0, 0)
        return simplejpeg.decode_jpeg(data, "RGB", min_height=min_h, min_width=min_w)
    except ValueError:
        pass  # not a JPEG: fall through to cv2, which reads PNG/WebP too
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("image bytes are not a decodable JPEG/PNG/WebP")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize(img: np.ndarray, size: Optional[Size], out: Optional[np.ndarray] = None) -> np.ndarray:
    """Bilinear resize to `size` (no-op when equal or None), writing into `out` when given."""
    if size is None or img.shape[:2] == size:
        if out is None:
            return img
        out[...] = img
        return out
    # INTER_LINEAR: INTER_AREA is much slower at non-integer factors (512 -> 384), and the DCT-scaled decode has
    # already done the large shrink, so bilinear barely aliases here
    return cv2.resize(img, (size[1], size[0]), dst=out, interpolation=cv2.INTER_LINEAR)
