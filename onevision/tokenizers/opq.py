"""OPQ: an orthogonal rotation learnt with faiss, then product quantization, one level per
sub-space. Used alone (the OPQ baseline) and for the deep residual levels of RQ-OPQ and VRQ.

faiss learns the rotation and the sub-space codebooks; encoding and decoding are then plain
array maths over the stored rotation and centroids, so the state is portable.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from onevision.tokenizers.base import PairData, Tokenizer, TokenizerError, TokenizerInputs, expect


class OPQLevels:
    """`levels` sub-spaces of size `size` (a power of two) over a rotated input."""

    def __init__(self, rotation: np.ndarray, centroids: np.ndarray):
        self.rotation = np.ascontiguousarray(rotation, dtype=np.float32)  # (d_out, d_in)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)  # (levels, size, d_sub)

    @staticmethod
    def padded_dim(d: int, levels: int) -> int:
        return levels * math.ceil(d / levels)

    @classmethod
    def fit(cls, x: np.ndarray, levels: int, size: int, seed: int = 0) -> "OPQLevels":
        nbits = int(math.log2(size))
        if 2**nbits != size:
            raise ValueError(f"OPQ level size must be a power of two, got {size}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) < size:
            raise ValueError(f"OPQ levels of {size} codes need at least {size} points, got {len(x)}")
        d, d_out = x.shape[1], cls.padded_dim(x.shape[1], levels)
        if len(x) >= d_out:
            opq = faiss.OPQMatrix(d, levels, d_out)
            opq.pq = faiss.ProductQuantizer(d_out, levels, nbits)  # train the rotation with our code size
            opq.verbose = False
            opq.train(x)
            rotation = faiss.vector_to_array(opq.A).reshape(d_out, d)
        else:  # faiss cannot learn a d_out x d rotation from fewer than d_out points: plain PQ
            rotation = np.eye(d_out, d, dtype=np.float32)
        pq = faiss.ProductQuantizer(d_out, levels, nbits)
        pq.cp.seed = seed
        pq.cp.min_points_per_centroid = 1
        pq.train(np.ascontiguousarray(x @ rotation.T))
        return cls(rotation, faiss.vector_to_array(pq.centroids).reshape(levels, size, d_out // levels))

    @property
    def levels(self) -> int:
        return self.centroids.shape[0]

    def encode(self, x: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(x, dtype=np.float32) @ self.rotation.T
        subs = y.reshape(len(y), self.levels, -1)
        codes = np.zeros((len(y), self.levels), dtype=np.int64)
        for level in range(self.levels):
            d2 = ((subs[:, level, None, :] - self.centroids[level][None]) ** 2).sum(-1)
            codes[:, level] = d2.argmin(1)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        y = np.concatenate([self.centroids[level][codes[:, level]] for level in range(self.levels)], axis=1)
        return (y @ self.rotation).astype(np.float32)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.rotation": self.rotation, f"{prefix}.centroids": self.centroids}

    @classmethod
    def from_state(cls, state: dict, prefix: str, d_in: int, levels: int, size: int) -> "OPQLevels":
        d_out = cls.padded_dim(d_in, levels)
        return cls(expect(state, f"{prefix}.rotation", (d_out, d_in)),
                   expect(state, f"{prefix}.centroids", (levels, size, d_out // levels)))


class OPQTokenizer(Tokenizer):
    """Baseline: OPQ alone on the visual embedding, every level a sub-space (no hierarchy)."""

    method = "opq"

    def __init__(self, sizes: tuple[int, ...], seed: int = 0):
        super().__init__(sizes, seed)
        if len(set(self.sizes)) != 1:
            raise TokenizerError(f"OPQ levels share one size, got {self.sizes}")

    def fit(self, items: TokenizerInputs, pairs: PairData | None = None, progress: bool = True) -> dict:
        self.opq = OPQLevels.fit(items.visual, self.levels, self.sizes[0], self.seed)
        return {}

    def encode(self, x: TokenizerInputs) -> np.ndarray:
        return self.opq.encode(x.visual)

    def quantized(self, x: TokenizerInputs) -> np.ndarray:
        return self.opq.decode(self.encode(x))

    def state(self) -> dict[str, np.ndarray]:
        return self.opq.state("opq")

    def config(self) -> dict:
        return {**super().config(), "dim": int(self.opq.rotation.shape[1])}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "OPQTokenizer":
        tok = cls(tuple(config["sizes"]), config.get("seed", 0))
        tok.opq = OPQLevels.from_state(state, "opq", config["dim"], tok.levels, tok.sizes[0])
        return tok
