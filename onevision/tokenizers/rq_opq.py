"""RQ-OPQ (OneSearch 3.1): RQ-KMeans for the shallow levels, OPQ + PQ over the residual for the
deep ones, on the visual embedding (no multi-view training, no business features)."""

from __future__ import annotations

import numpy as np

from onevision.tokenizers.base import PairData, Tokenizer, TokenizerError, TokenizerInputs, expect
from onevision.tokenizers.opq import OPQLevels
from onevision.tokenizers.rq_kmeans import ResidualKMeans

SHALLOW = 3


class RQOPQTokenizer(Tokenizer):
    method = "rq-opq"

    def __init__(self, sizes: tuple[int, ...], seed: int = 0):
        super().__init__(sizes, seed)
        if len(self.sizes) <= SHALLOW or len(set(self.sizes[SHALLOW:])) != 1:
            raise TokenizerError(f"RQ-OPQ needs {SHALLOW} RQ levels and OPQ levels of one size, got {self.sizes}")

    def fit(self, items: TokenizerInputs, pairs: PairData | None = None, progress: bool = True) -> dict:
        self.rq = ResidualKMeans.fit(items.visual, self.sizes[:SHALLOW], self.seed)
        _, residual = self.rq.encode(items.visual)
        self.opq = OPQLevels.fit(residual, len(self.sizes) - SHALLOW, self.sizes[SHALLOW], self.seed)
        return {}

    def encode(self, x: TokenizerInputs) -> np.ndarray:
        codes, residual = self.rq.encode(x.visual)
        return np.concatenate([codes, self.opq.encode(residual)], 1)

    def quantized(self, x: TokenizerInputs) -> np.ndarray:
        codes = self.encode(x)
        return self.rq.decode(codes[:, :SHALLOW]) + self.opq.decode(codes[:, SHALLOW:])

    def state(self) -> dict[str, np.ndarray]:
        return {**{f"rq.{level}": b for level, b in enumerate(self.rq.codebooks)}, **self.opq.state("opq")}

    def config(self) -> dict:
        return {**super().config(), "dim": int(self.rq.codebooks[0].shape[1])}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "RQOPQTokenizer":
        tok = cls(tuple(config["sizes"]), config.get("seed", 0))
        d = config["dim"]
        tok.rq = ResidualKMeans([expect(state, f"rq.{level}", (k, d)) for level, k in enumerate(tok.sizes[:SHALLOW])])
        tok.opq = OPQLevels.from_state(state, "opq", d, len(tok.sizes) - SHALLOW, tok.sizes[SHALLOW])
        return tok
