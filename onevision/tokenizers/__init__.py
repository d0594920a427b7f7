"""Semantic-ID tokenizers behind one interface: VRQ and the baselines of Table 4.

| method | shallow levels | deep levels |
|---|---|---|
| `vrq` | multi-view contrastive RQ-VAE over image + category fusion (RQ-KMeans init) | OPQ over residual + business features |
| `rq-kmeans` | residual k-means (all levels) | - |
| `rq-opq` | residual k-means | OPQ over the residual (OneSearch) |
| `opq` | - | OPQ only (all levels) |
| `rqvae` | RQ-VAE with reconstruction + commitment only (TIGER) | - |
"""  # noqa: E501  (the `vrq` row: a markdown table row cannot wrap)

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from onevision.tokenizers.base import Tokenizer, TokenizerError
from onevision.tokenizers.opq import OPQTokenizer
from onevision.tokenizers.rq_kmeans import RQKMeansTokenizer
from onevision.tokenizers.rq_opq import RQOPQTokenizer
from onevision.tokenizers.rq_vae import RQVAETokenizer
from onevision.tokenizers.vrq import VRQTokenizer

METHODS: dict[str, type[Tokenizer]] = {
    "vrq": VRQTokenizer, "rq-kmeans": RQKMeansTokenizer, "rq-opq": RQOPQTokenizer, "opq": OPQTokenizer,
    "rqvae": RQVAETokenizer,
}
PAPER_SIZES = (2048, 512, 256, 256, 256)
WEIGHTS = "tokenizer.safetensors"


def default_sizes(n_items: int, method: str) -> tuple[int, ...]:
    """Codebook sizes sized to the catalog: level 1 about sqrt(N) (a power of two), then halving;
    OPQ levels 16 (4 for tiny catalogs). RQ-only methods get 3 levels, the others 5."""
    k1 = int(2 ** round(math.log2(max(math.sqrt(n_items), 4))))
    k1 = min(max(k1, 4), 2048)
    shallow = (k1, max(k1 // 2, 4), max(k1 // 4, 4))
    deep = (16, 16) if n_items >= 1000 else (4, 4)
    if method in ("rq-kmeans", "rqvae"):
        return shallow
    if method == "opq":
        return deep[:1] * 5
    return shallow + deep


def make_tokenizer(method: str, sizes: tuple[int, ...], seed: int = 0, options: dict | None = None) -> Tokenizer:
    """A fresh tokenizer; `options` are the method's own constructor arguments (training lengths)."""
    if method not in METHODS:
        raise ValueError(f"unknown tokenizer method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](tuple(sizes), seed, **(options or {}))


def save_tokenizer(tok: Tokenizer, folder: Path) -> dict[str, Path]:
    """Write the state as safetensors in `folder`; return the files to publish."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tok.state().items()}, folder / WEIGHTS)
    return {WEIGHTS: folder / WEIGHTS}


def load_tokenizer(version_dir: str | Path) -> Tokenizer:
    """Rebuild a tokenizer from a registry version; corrupt or mismatched artifacts are refused."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from onevision.registry import RegistryError, load_version

    try:
        _, config = load_version(version_dir)
    except RegistryError as exc:
        raise TokenizerError(str(exc)) from None
    spec = config.get("tokenizer")
    if not spec or spec.get("method") not in METHODS:
        raise TokenizerError(f"{version_dir}: not a tokenizer artifact (config has no known tokenizer method)")
    try:
        state = load_file(Path(version_dir) / WEIGHTS)
    except (SafetensorError, OSError) as exc:
        raise TokenizerError(f"{version_dir}: {WEIGHTS} is unreadable ({exc})") from None
    return METHODS[spec["method"]].from_state(spec, state)


__all__ = ["METHODS", "PAPER_SIZES", "Tokenizer", "TokenizerError", "default_sizes", "load_tokenizer",
           "make_tokenizer", "save_tokenizer"]
