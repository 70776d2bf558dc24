"""Decode → resize → encode, once per image and fast: JPEG DCT scaling, cv2 resize, libjpeg-turbo encode.

The fast path (simplejpeg) covers baseline and progressive YCbCr/grayscale JPEGs. CMYK/YCCK JPEGs and real PNG files
go through PIL. simplejpeg ignores EXIF, so the orientation tag is read from the header (PIL parses markers without
decoding) and applied with numpy. Anything unreadable raises BadImage with a one-line reason for the manifest's
`rejected` list.
"""
from __future__ import annotations

import io
import warnings
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from .options import ASPECTS

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold (≈ 89 Mpx); ISIC's largest originals are ~24 Mpx
# Bounded memory on hostile input: a file is read whole only when it is at most MAX_FILE_BYTES (ISIC's largest JPEG
# originals are ~20 MB) and at most what its header's pixels take uncompressed (16-bit RGBA: 8 bytes per pixel) plus
# room for metadata (EXIF, ICC profiles, thumbnails). Checked on the first HEAD_BYTES, before inflating a zip member.
MAX_FILE_BYTES = 256 << 20
HEAD_BYTES = 1 << 16
_MAX_BYTES_PER_PIXEL = 8
_METADATA_BYTES = 16 << 20
_MAGIC = [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
          (b"RIFF", "WEBP")]
# EXIF orientation → (transpose, number of 90° counter-clockwise rotations, flip left-right) applied in that order
_ORIENT = {2: (False, 0, True), 3: (False, 2, False), 4: (False, 2, True), 5: (True, 0, False),
           6: (False, 3, False), 7: (True, 2, False), 8: (False, 1, False)}


class BadImage(ValueError):
    """An input file that cannot become a sample; the message is the reason recorded in `rejected`."""


def sniff(data: bytes) -> str:
    """'JPEG', 'PNG', … from the magic bytes, or '' when it is no image format we know."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    for magic, name in _MAGIC:
        if data.startswith(magic) and (name != "WEBP" or data[8:12] == b"WEBP"):
            return name
    return ""


def _open(data: bytes) -> Image.Image:
    """PIL's view of an image's header (markers only, no pixel decoding); BadImage when it cannot be parsed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise BadImage(f"decompression bomb ({err})") from None
    except Exception as err:  # PIL raises many types for garbage; all mean the same to the user
        raise BadImage(f"unreadable image header ({type(err).__name__}: {err})") from None


def check_file(head: bytes, size: int) -> None:
    """Refuse a file before it is read whole (BadImage) when it is over MAX_FILE_BYTES, or bigger than the image its
    header describes could be uncompressed (a zip member of zeros behind a tiny JPEG header inflates to gigabytes).

    `head`: the file's first HEAD_BYTES; when the header does not fit in them only the byte limit applies.
    """
    if size > MAX_FILE_BYTES:
        raise BadImage(f"file too large: {size / 1e6:.0f} MB, over the {MAX_FILE_BYTES / 1e6:.0f} MB limit for one "
                       "image (not read)")
    try:
        w, h = _open(head).size
    except BadImage:
        return
    if size > _MAX_BYTES_PER_PIXEL * w * h + _METADATA_BYTES:
        raise BadImage(f"implausible file size: {size / 1e6:.0f} MB for a {w}×{h} image, more than its pixels take "
                       "uncompressed (a decompression bomb or appended data; not read)")


def _header(data: bytes, name: str) -> Tuple[Image.Image, int]:
    """Open with PIL (markers only, no pixel decoding) and return it with its EXIF orientation (1 = upright)."""
    img = _open(data)
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise BadImage(f"decompression bomb: {w}×{h} = {w * h / 1e6:.0f} Mpx exceeds {MAX_PIXELS / 1e6:.0f} Mpx")
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a damaged EXIF block should not cost the image
        orientation = 1
    return img, orientation if orientation in _ORIENT else 1


def dct_min_size(w: int, h: int, need_w: int, need_h: int) -> Tuple[int, int]:
    """simplejpeg's (min_width, min_height) that select the largest power-of-two DCT scale still ≥ the need; (0, 0) =
    full size.

    libjpeg-turbo's 1/2, 1/4, 1/8 scales use SIMD IDCTs; odd factors (3/8, 5/8 …) are scalar and slower.
    """
    for denom in (8, 4, 2):
        sw, sh = -(-w // denom), -(-h // denom)
        if sw >= need_w and sh >= need_h:
            return sw, sh
    return 0, 0


def _decode(data: bytes, img: Image.Image, fmt: str, need_w: int, need_h: int) -> np.ndarray:
    """RGB pixels, DCT-downscaled when large; PIL for CMYK/YCCK JPEGs and non-JPEG formats."""
    w, h = img.size
    if fmt == "JPEG" and img.mode in ("RGB", "L"):
        min_w, min_h = dct_min_size(w, h, need_w, need_h)
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_w, min_height=min_h)
        except ValueError:
            pass  # e.g. arithmetic coding or a recoverable glitch simplejpeg refuses: let PIL try
    try:
        if fmt == "JPEG":
            img.draft("RGB", (need_w, need_h))  # PIL's DCT scaling: still ≥ the requested size
        img.load()
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent → white, not black
            img = Image.alpha_composite(background, img)
        return np.asarray(img.convert("RGB"))
    except Exception as err:
        raise BadImage(f"corrupt or truncated image data ({type(err).__name__}: {err})") from None


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    if orientation == 1:
        return pixels
    transpose, rot, flip = _ORIENT[orientation]
    if transpose:
        pixels = pixels.transpose(1, 0, 2)
    if rot:
        pixels = np.rot90(pixels, rot)
    if flip:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels)


def _need(w: int, h: int, size: int, aspect: str) -> Tuple[int, int]:
    """Smallest decoded (w, h) from which `aspect` can make a size×size image without upsampling."""
    if aspect == "pad":
        return (size, 0) if w >= h else (0, size)
    return size, size


def _scale(pixels: np.ndarray, tw: int, th: int) -> np.ndarray:
    """Resize to tw×th: exact halvings by area averaging while ≥ 2× too big, then bilinear for the last < 2×.

    cv2's INTER_AREA is fast only at integer factors (several times slower than this at 1024 → 384); bilinear
    below 2× barely aliases. Upscaling (originals smaller than the target) uses bicubic.
    """
    h, w = pixels.shape[:2]
    while w >= 2 * tw and h >= 2 * th:
        w, h = w // 2, h // 2
        pixels = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
    if (w, h) == (tw, th):
        return pixels
    if w >= 2 * tw or h >= 2 * th:  # anisotropic squash: one side still ≥ 2× too big, average it properly
        return cv2.resize(pixels, (tw, th), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_LINEAR if tw <= w and th <= h else cv2.INTER_CUBIC
    return cv2.resize(pixels, (tw, th), interpolation=interp)


def _resize(pixels: np.ndarray, size: int, aspect: str) -> np.ndarray:
    h, w = pixels.shape[:2]
    if aspect == "crop":  # crop the centred square first, so only the kept pixels are resized
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        pixels, h, w = pixels[y:y + side, x:x + side], side, side
    if aspect == "pad":
        scale = size / max(h, w)
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    else:
        tw, th = size, size
    if (tw, th) != (w, h):
        pixels = _scale(np.ascontiguousarray(pixels), tw, th)
    if aspect == "pad" and (tw, th) != (size, size):
        canvas = np.zeros((size, size, 3), np.uint8)
        y, x = (size - th) // 2, (size - tw) // 2
        canvas[y:y + th, x:x + tw] = pixels
        pixels = canvas
    return pixels


def convert_image(data: bytes, sizes: Sequence[int], aspect: str = "crop", quality: int = 90,
                  name: str = "") -> List[bytes]:
    """Re-encode one image as size×size RGB JPEGs (one per size, same order); raise BadImage with the reason."""
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, not {aspect!r}")
    if not data:
        raise BadImage("empty file (0 bytes)")
    fmt = sniff(data)
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if not fmt:
        raise BadImage("not an image (unknown file format)")
    if ext in ("jpg", "jpeg") and fmt != "JPEG":
        raise BadImage(f"not a JPEG ({fmt} data in a .{ext} file)")
    img, orientation = _header(data, name)
    w, h = img.size
    if orientation >= 5:
        w, h = h, w  # the decoded pixels are transposed before resizing
    need_w, need_h = _need(w, h, max(sizes), aspect)
    if orientation >= 5:
        need_w, need_h = need_h, need_w
    pixels = _orient(_decode(data, img, fmt, need_w, need_h), orientation)
    out = []
    for size in sorted(set(sizes), reverse=True):
        out.append((size, simplejpeg.encode_jpeg(_resize(pixels, size, aspect), quality=quality,
                                                 colorsubsampling="420")))
    by_size = dict(out)
    return [by_size[s] for s in sizes]


def image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) of an encoded image from its header, or None when unreadable."""
    try:
        return Image.open(io.BytesIO(data)).size
    except Exception:
        return None
