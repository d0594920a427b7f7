"""The image-encoder interface used by evaluation and, later, the tokenizer and generator.

An encoder maps images to L2-normalised float32 vectors. `encode_files` streams images in
batches with a progress bar, so catalogs larger than memory's worth of pixels are fine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from onevision.images import load_rgb


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)).astype(np.float32)


class ImageEncoder(ABC):
    """Images in, unit vectors out."""

    name: str
    dim: int
    batch_size: int = 64

    @abstractmethod
    def encode_arrays(self, images: Sequence) -> np.ndarray:
        """Encode a batch of PIL RGB images to (N, dim) float32, L2-normalised."""

    def encode_files(self, paths: Sequence[str | Path], desc: str = "encoding", progress: bool = True) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), self.batch_size):
                batch = [load_rgb(p) for p in paths[start : start + self.batch_size]]
                out[start : start + len(batch)] = self.encode_arrays(batch)
                bar.update(len(batch))
        return out
