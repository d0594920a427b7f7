"""The visual-token cache: keyed by the images' names, so a catalog read through another path
finds it, and recomputed when the names differ."""

import shutil

import numpy as np
import torch

from onevision.catalog.format import load_catalog
from onevision.encoders.aligned import AlignedConfig, AlignedEfficientNet
from onevision.encoders.visual_tokens import cached_tokens


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

