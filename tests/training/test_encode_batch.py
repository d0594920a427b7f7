"""Batch encoding on Ray Data (a real local Ray, two actors) on the tiny world: the same vectors as
the single-process encoder, resumable by shard, and the caches later stages read without encoding."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.encoders.aligned import AlignedConfig, AlignedEfficientNet
from onevision.encoders.visual_tokens import encode_files
from onevision.generator.data import bank_paths
from onevision.registry import resolve
from onevision_cli.main import app
from training.align_encoder import AlignRecipe, publish_encoder
from training.encode_batch import MANIFEST, SHARD, encode_catalog, read_shards

CHUNK = 128  # the tiny world's 510 images in 4 shards


@pytest.fixture(scope="module")
def encoded(tiny_world, tmp_path_factory):
    """(catalog, encoder version, cache, CLI output) after `onevision encode --workers 2` with an
    encoder published for the tiny world (ImageNet trunk, seeded head: no alignment needed here)."""
    root = tmp_path_factory.mktemp("encode")
    catalog = load_catalog(tiny_world)
    with tempfile.TemporaryDirectory() as work:
        version = publish_encoder(AlignedEfficientNet.from_pretrained(AlignedConfig()), AlignRecipe(), catalog,
                                  {"losses": [0.0], "seconds": 0.0}, root / "registry", Path(work))
    result = CliRunner().invoke(app, ["encode", "--catalog", str(tiny_world), "--workers", "2", "--chunk", str(CHUNK),
                                      "--registry", str(root / "registry"), "--cache", str(root / "cache")])
    assert result.exit_code == 0, result.output
    return catalog, version, root / "cache", result.output


def _run(cache, catalog):
    from training.encode_batch import encoded_dir

    version = resolve(cache.parent / "registry" / f"encoder-{catalog.name}")
    out = encoded_dir(catalog, version, cache)
    return out, json.loads((out / MANIFEST).read_text())


def test_two_workers_give_the_single_process_vectors(encoded):
    catalog, version, cache, output = encoded
    out, manifest = _run(cache, catalog)
    assert "items/s with 2 workers" in output and str(out) in output
    assert manifest["n_images"] == len(bank_paths(catalog)) == 510 and manifest["n_shards"] == 4
    assert manifest["encoded_shards"] == [0, 1, 2, 3] and manifest["workers"] == 2 and manifest["items_per_second"] > 0
    got = read_shards(out, manifest["n_shards"])
    ref = encode_files(AlignedEfficientNet.load(version), [catalog.path(p) for p in bank_paths(catalog)],
                       progress=False)
    assert got.tokens.dtype == np.float16 and got.embedding.dtype == np.float32
    assert np.abs(got.embedding - ref.embedding).max() < 1e-4
    assert np.abs(got.tokens.astype(np.float32) - ref.tokens.astype(np.float32)).max() <= 1e-3


def test_later_stages_read_the_caches_without_encoding(encoded, monkeypatch):
    import onevision.encoders.visual_tokens as visual_tokens
    import training.tokenizer as tokenizer
    from onevision.generator.data import image_bank

    catalog, version, cache, _ = encoded
    out, manifest = _run(cache, catalog)
    shards = read_shards(out, manifest["n_shards"])

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(visual_tokens, "encode_files", no_encoding)
    monkeypatch.setattr(tokenizer, "build_features", no_encoding)
    bank = image_bank(load_catalog(catalog.root), version, cache, progress=False)
    assert list(bank.row) == bank_paths(catalog)
    assert np.array_equal(bank.tokens.tokens, shards.tokens) and np.array_equal(bank.tokens.embedding, shards.embedding)
    assert bank.tokens.tokens.dtype == np.float16 and bank.tokens.embedding.dtype == np.float32
    # the tokenizer's features hold the same embeddings: items first, then views and train photos
    fresh = load_catalog(catalog.root)
    _, features = tokenizer.ensure_features(fresh, cache.parent / "registry", cache, AlignRecipe(), progress=False)
    n = len(fresh.items)
    assert np.array_equal(features.items.visual, shards.embedding[:n])
    assert np.array_equal(features.views.inputs.visual, shards.embedding[n:n + len(features.views.item)])


def test_a_rerun_encodes_only_the_missing_shard(encoded):
    catalog, version, cache, _ = encoded
    out, manifest = _run(cache, catalog)
    before = read_shards(out, manifest["n_shards"])
    (out / SHARD.format(1)).unlink()
    kept = {k: (out / SHARD.format(k)).stat().st_mtime_ns for k in (0, 2, 3)}
    run = encode_catalog(load_catalog(catalog.root), version, cache, workers=2, chunk=CHUNK, progress=False)
    assert run.encoded_shards == [1] and run.encoded_images == CHUNK
    assert json.loads((out / MANIFEST).read_text())["encoded_shards"] == [1]
    assert {k: (out / SHARD.format(k)).stat().st_mtime_ns for k in kept} == kept
    after = read_shards(out, manifest["n_shards"])
    assert np.abs(after.embedding - before.embedding).max() < 1e-4
    # nothing missing: no Ray, nothing encoded
    again = encode_catalog(load_catalog(catalog.root), version, cache, workers=2, chunk=CHUNK, progress=False)
    assert again.encoded_shards == [] and again.items_per_second == 0.0


def test_cli_help_and_a_missing_catalog(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["encode", "--help"]).exit_code == 0
    result = runner.invoke(app, ["encode", "--catalog", str(tmp_path / "nothing"), "--workers", "2"])
    assert result.exit_code == 2 and "not a directory" in result.output
