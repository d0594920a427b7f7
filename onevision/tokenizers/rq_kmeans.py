"""RQ-KMeans: residual k-means with faiss, level by level (the shallow levels of RQ-OPQ).

Level l clusters the residuals left by levels < l; an item's code at level l is its nearest
centroid, and its residual drops that centroid. Also used to initialise the VRQ and TIGER
codebooks.
"""

from __future__ import annotations

import faiss
import numpy as np

from onevision.tokenizers.base import PairData, Tokenizer, TokenizerInputs, expect


class ResidualKMeans:
    """Codebooks (one (K_l, d) array per level) learnt by k-means on successive residuals."""

    def __init__(self, codebooks: list[np.ndarray]):
        self.codebooks = [np.ascontiguousarray(c, dtype=np.float32) for c in codebooks]

    @classmethod
    def fit(cls, x: np.ndarray, sizes: tuple[int, ...], seed: int = 0, niter: int = 25) -> "ResidualKMeans":
        residual = np.ascontiguousarray(x, dtype=np.float32).copy()
        books = []
        for level, k in enumerate(sizes):
            if len(residual) < k:
                raise ValueError(f"level {level + 1} needs at least {k} points to learn {k} codes, got {len(residual)}")
            km = faiss.Kmeans(residual.shape[1], k, niter=niter, seed=seed + level, verbose=False,
                              min_points_per_centroid=1, max_points_per_centroid=100_000)
            km.train(residual)
            assert km.centroids is not None  # set by train
            books.append(km.centroids.copy())
            _, idx = km.index.search(residual, 1)
            residual -= books[-1][idx[:, 0]]
        return cls(books)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes (N, L), final residual (N, d))."""
        residual = np.ascontiguousarray(x, dtype=np.float32).copy()
        codes = np.zeros((len(residual), len(self.codebooks)), dtype=np.int64)
        for level, book in enumerate(self.codebooks):
            index = faiss.IndexFlatL2(book.shape[1])
            index.add(book)
            _, idx = index.search(residual, 1)
            codes[:, level] = idx[:, 0]
            residual -= book[idx[:, 0]]
        return codes, residual

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return sum(book[codes[:, level]] for level, book in enumerate(self.codebooks)).astype(np.float32)


class RQKMeansTokenizer(Tokenizer):
    """Baseline: residual k-means on the visual embedding, all levels."""

    method = "rq-kmeans"

    def fit(self, items: TokenizerInputs, pairs: PairData | None = None, progress: bool = True) -> dict:
        self.rq = ResidualKMeans.fit(items.visual, self.sizes, self.seed)
        return {}

    def encode(self, x: TokenizerInputs) -> np.ndarray:
        return self.rq.encode(x.visual)[0]

    def quantized(self, x: TokenizerInputs) -> np.ndarray:
        return self.rq.decode(self.encode(x))

    def state(self) -> dict[str, np.ndarray]:
        return {f"rq.{level}": book for level, book in enumerate(self.rq.codebooks)}

    def config(self) -> dict:
        return {**super().config(), "dim": int(self.rq.codebooks[0].shape[1])}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "RQKMeansTokenizer":
        tok = cls(tuple(config["sizes"]), config.get("seed", 0))
        tok.rq = ResidualKMeans([expect(state, f"rq.{level}", (k, config["dim"])) for level, k in enumerate(tok.sizes)])
        return tok
