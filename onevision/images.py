"""Safe image decoding shared by every stage: one place that turns bytes or files into RGB.

Bad input raises `ImageError` with a reason (serving maps it to a 4xx); decompression bombs
are refused before the pixels are decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger images are refused, not decoded


class ImageError(ValueError):
    """The input is not a decodable image of acceptable size; the message says why."""


class ImageTooLarge(ImageError):
    """Too many pixels, or a decompression bomb (serving answers 413)."""


def load_rgb(source: bytes | str | Path | Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image to RGB, refusing empty, truncated, non-image and oversized inputs; an image
    already decoded (PIL) is only converted."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("empty image")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
        fp = Path(source)
        if not fp.is_file():
            raise ImageError(f"image file not found: {fp}")
    try:
        with Image.open(fp) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"image is {w}x{h} pixels, more than the limit of {max_pixels}")
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"image could not be decoded: {exc}") from None


def image_media_type(data: bytes) -> str:
    """The media type of encoded image bytes, from their signature (what a page is sent)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def to_array(img: Image.Image, size: int) -> np.ndarray:
    """Resize to size x size and return float32 HWC in [0, 1]."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0
