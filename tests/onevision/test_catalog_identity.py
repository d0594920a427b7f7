"""A catalog is known by its content: rebuilt under the same name with another split or other
photos, it gets another fingerprint, another cache folder, and none of the old models."""

import shutil

import pandas as pd
from PIL import Image

from onevision.catalog.format import catalog_fingerprint, catalog_key, load_catalog, write_table
from onevision.registry import current_for_catalog, publish


def test_a_rebuilt_catalog_never_reuses_what_was_made_for_the_old_one(tiny_world, tmp_path):
    first = shutil.copytree(tiny_world, tmp_path / "a" / "shop")
    c = load_catalog(first)
    fp = catalog_fingerprint(c)
    assert fp == catalog_fingerprint(load_catalog(first))  # stable across loads
    (tmp_path / "w.txt").write_text("weights")
    registry = tmp_path / "registry"
    publish(registry, "encoder-shop", {"w.txt": tmp_path / "w.txt"}, {"catalog_fingerprint": fp})
    assert current_for_catalog(registry, "encoder-shop", fp) is not None

    # the same directory name, the test photos now train photos (another split)
    resplit = shutil.copytree(tiny_world, tmp_path / "b" / "shop")
    q = pd.read_parquet(resplit / "queries.parquet")
    q["split"] = q["split"].replace({"test": "train", "train": "test"})
    write_table(q, resplit / "queries.parquet")
    other = load_catalog(resplit)
    assert other.name == c.name and catalog_fingerprint(other) != fp and catalog_key(other) != catalog_key(c)
    assert current_for_catalog(registry, "encoder-shop", catalog_fingerprint(other)) is None

    # the same tables, one photo changed
    rephoto = shutil.copytree(tiny_world, tmp_path / "c" / "shop")
    path = rephoto / c.queries["image"].iloc[0]
    Image.open(path).rotate(90).save(path)
    assert catalog_fingerprint(load_catalog(rephoto)) != fp
