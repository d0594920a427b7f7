"""The tokenizer interface every SID method implements, and its inputs.

A tokenizer maps items (and query or view images) to L integer codes, level 1 first, and to a
quantized vector (what the codes reconstruct), which the QAS metric searches. Its state is a
dict of arrays (saved as safetensors) plus a JSON config; `from_state` rebuilds it and refuses
arrays whose shapes disagree with the config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


@dataclass
class TokenizerInputs:
    """Features of N images: visual embedding, category text embedding, business features."""

    visual: np.ndarray  # (N, dv) unit vectors from the image encoder V
    text: np.ndarray  # (N, dt) category text embeddings
    business: np.ndarray  # (N, nb) standardised business features (zeros where unknown)

    def __len__(self) -> int:
        return len(self.visual)

    def take(self, idx) -> "TokenizerInputs":
        return TokenizerInputs(self.visual[idx], self.text[idx], self.business[idx])


@dataclass
class PairData:
    """Extra images of catalog items (other views, train photos), for multi-view training."""

    inputs: TokenizerInputs
    item: np.ndarray  # (P,) index of the item each image shows


class TokenizerError(ValueError):
    """A tokenizer state that cannot be loaded (wrong shapes, missing arrays, other sizes)."""


class Tokenizer(ABC):
    method: str

    def __init__(self, sizes: tuple[int, ...], seed: int = 0):
        self.sizes = tuple(int(k) for k in sizes)
        self.seed = seed

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @abstractmethod
    def fit(self, items: TokenizerInputs, pairs: PairData | None = None, progress: bool = True) -> dict:
        """Learn codebooks from catalog items; return a training log."""

    @abstractmethod
    def encode(self, x: TokenizerInputs) -> np.ndarray:
        """(N, L) int64 codes."""

    @abstractmethod
    def quantized(self, x: TokenizerInputs) -> np.ndarray:
        """(N, D) float32 vectors reconstructed from the codes."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that, with `config()`, rebuild the tokenizer."""

    def config(self) -> dict:
        return {"method": self.method, "sizes": list(self.sizes), "seed": self.seed}

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "Tokenizer":
        """Rebuild from `config()` and `state()`; raise TokenizerError when they disagree."""


def expect(state: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The array `name` of a state, checked against the shape its config implies."""
    if name not in state:
        raise TokenizerError(f"tokenizer state has no array {name!r}")
    arr = state[name]
    if tuple(arr.shape) != tuple(shape):
        raise TokenizerError(f"tokenizer array {name!r} has shape {tuple(arr.shape)}, config implies {tuple(shape)}")
    return arr


def load_module(module: nn.Module, state: dict[str, np.ndarray], prefix: str) -> None:
    """Load `prefix.*` arrays of a state into a torch module (VRQ's fusion, RQ-VAE's MLPs),
    checking every shape first."""
    import torch  # here, so that the faiss-only tokenizers never import torch

    own = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(expect(state, f"{prefix}.{k}", tuple(v.shape)))
                            for k, v in own.items()})
