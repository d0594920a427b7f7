"""Raw-pixel baseline: a small thumbnail, centred per image, as the embedding.

It is the floor any learned encoder must clear; it knows colour and layout, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onevision.encoders.base import ImageEncoder, l2_normalize
from onevision.images import to_array


class PixelEncoder(ImageEncoder):
    name = "pixels"

    def __init__(self, side: int = 32):
        self.side = side
        self.dim = side * side * 3
        self.batch_size = 256

    def encode_arrays(self, images: Sequence) -> np.ndarray:
        x = np.stack([to_array(img, self.side).reshape(-1) for img in images])
        return l2_normalize(x - x.mean(axis=1, keepdims=True))
