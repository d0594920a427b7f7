"""Visual tokens for the generator: V's token grid plus its pooled embedding, per image.

The aligned encoder returns a 4x4 grid of 320-d tokens (128 px input) and a unit 256-d
embedding. The generator reads both (the grid projected token by token, the embedding as one
more token). Computing them is the slow part of building training data, so they are cached
per (catalog, encoder weights) as safetensors: the grid in float16 (half the bytes, no
measurable loss), the embedding in float32 (the low-confidence check compares it exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from onevision.encoders.aligned import AlignedEfficientNet
from onevision.images import load_rgb


@dataclass
class VisualTokens:
    tokens: np.ndarray  # (N, T, 320) float16: V's grid
    embedding: np.ndarray  # (N, D) float32: V's unit embedding

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, idx) -> "VisualTokens":
        return VisualTokens(self.tokens[idx], self.embedding[idx])


@torch.inference_mode()
def encode_images(model: AlignedEfficientNet, images: Sequence, batch_size: int = 64) -> VisualTokens:
    """Tokens of decoded images (PIL RGB)."""
    toks, embs = [], []
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        out = model.encode(model.preprocess(images[start:start + batch_size]).to(device))
        toks.append(out.tokens.cpu().numpy().astype(np.float16))  # the host keeps them: hints, logs, caches
        embs.append(out.embedding.cpu().numpy().astype(np.float32))
    return VisualTokens(np.concatenate(toks), np.concatenate(embs))


def encode_files(model: AlignedEfficientNet, paths: Sequence[str | Path], batch_size: int = 64,
                 desc: str = "visual tokens", progress: bool = True) -> VisualTokens:
    parts = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            batch = [load_rgb(p) for p in paths[start:start + batch_size]]
            parts.append(encode_images(model, batch, batch_size))
            bar.update(len(batch))
    return VisualTokens(np.concatenate([p.tokens for p in parts]), np.concatenate([p.embedding for p in parts]))


def cached_tokens(model: AlignedEfficientNet, paths: Sequence[str | Path], cache: Path,
                  progress: bool = True, keys: Sequence[str] | None = None) -> VisualTokens:
    """Tokens of `paths` from `cache` (a safetensors file keyed by the caller on the weights);
    computed and written when the file is missing or holds other images. `keys` name the images
    (default: the paths); a catalog passes its relative image paths, so the same catalog read
    through another path (absolute or relative, another checkout) still finds its cache."""
    paths = list(paths)
    names = [str(p) for p in (paths if keys is None else keys)]
    if cache_holds(cache, names):
        z = load_file(cache)
        return VisualTokens(z["tokens"], z["embedding"])
    out = encode_files(model, paths, progress=progress)
    save_tokens(cache, out, names)
    return out


def save_tokens(cache: Path, tokens: VisualTokens, keys: Sequence[str]) -> None:
    """The cache file `cached_tokens` reads (the tokens, the embeddings and the images' keys), atomically."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"tokens": np.ascontiguousarray(tokens.tokens), "embedding": np.ascontiguousarray(tokens.embedding),
               "paths": _encode_paths(np.array([str(k) for k in keys]))}, str(tmp))
    tmp.replace(cache)


def cache_holds(cache: Path, keys: Sequence[str]) -> bool:
    """Whether `cache` is a tokens file of exactly these images, in this order."""
    if not cache.is_file():
        return False
    with safe_open(str(cache), "np") as f:  # only the keys, not the tokens
        stored = {"paths": f.get_tensor("paths")} if "paths" in f.keys() else {}
    return _same_paths(stored, np.array([str(k) for k in keys]))


def _encode_paths(names: np.ndarray) -> np.ndarray:
    return np.frombuffer("\n".join(names).encode(), dtype=np.uint8).copy()


def _same_paths(z: dict, names: np.ndarray) -> bool:
    return "paths" in z and z["paths"].tobytes() == _encode_paths(names).tobytes()
