"""The visual-token cache: keyed by the images' names, so a catalog read through another path
finds it, and recomputed when the names differ."""

import shutil

import numpy as np
import torch

from onevision.catalog.format import load_catalog
from onevision.encoders.aligned import AlignedConfig, AlignedEfficientNet
from onevision.encoders.visual_tokens import (
    VisualTokens,
    bank_seed,
    cache_holds,
    cached_tokens,
    encode_files,
    save_tokens,
)


def test_the_cache_follows_the_catalog_relative_names_not_the_root(tiny_world, tmp_path):
    torch.manual_seed(0)
    model = AlignedEfficientNet(AlignedConfig()).eval()
    names = list(load_catalog(tiny_world).items["image"][:3])
    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_world / "images", moved / "images")
    cache = tmp_path / "cache.safetensors"
    first = cached_tokens(model, [tiny_world / n for n in names], cache, progress=False, keys=names)
    written = cache.stat().st_mtime_ns
    again = cached_tokens(model, [moved / n for n in names], cache, progress=False, keys=names)  # same catalog, moved
    assert cache.stat().st_mtime_ns == written and np.array_equal(first.tokens, again.tokens)
    other = cached_tokens(model, [moved / n for n in names[:2]], cache, progress=False, keys=names[:2])
    assert cache.stat().st_mtime_ns != written and len(other) == 2  # other images: recomputed


def test_a_seed_spares_encoding_the_images_it_holds(tiny_world, tmp_path):
    torch.manual_seed(0)
    model = AlignedEfficientNet(AlignedConfig()).eval()
    names = list(load_catalog(tiny_world).items["image"][:5])
    paths = [tiny_world / n for n in names]
    full = encode_files(model, paths, progress=False)
    cache = tmp_path / "visual.safetensors"
    # a seed of two images with marked values: taken as they are, so never encoded again
    marked = VisualTokens(np.full((2, *full.tokens.shape[1:]), 7, np.float16), np.full((2, full.embedding.shape[1]), 7,
                                                                                         np.float32))
    save_tokens(bank_seed(cache), marked, [names[3], names[1]])
    out = cached_tokens(model, paths, cache, progress=False, keys=names)
    assert (out.tokens[[3, 1]] == 7).all() and (out.embedding[[3, 1]] == 7).all()
    rest = [0, 2, 4]
    np.testing.assert_allclose(out.embedding[rest], full.embedding[rest], atol=1e-6)
    assert np.array_equal(out.tokens[rest], full.tokens[rest])
    assert not bank_seed(cache).exists() and cache_holds(cache, names)
