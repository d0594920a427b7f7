"""Multi-view alignment of V on the tiny world: pairs, frozen trunk, artifact round trip."""

import numpy as np
import pytest
import torch

from onevision.catalog.format import load_catalog
from onevision.encoders.aligned import AlignedEfficientNet, AlignedImageEncoder
from onevision.encoders.efficientnet import load_pretrained
from onevision.registry import RegistryError, resolve
from training.align_encoder import AlignRecipe, positive_groups, publish_encoder, train_aligned_encoder


@pytest.fixture(scope="module")
def aligned(tiny_world):
    catalog = load_catalog(tiny_world)
    model, log = train_aligned_encoder(catalog, AlignRecipe(steps=25, batch_size=32), progress=False)
    return catalog, model, log


def test_pairs_use_views_and_train_photos_only(tiny_world):
    catalog = load_catalog(tiny_world)
    paths, groups = positive_groups(catalog)
    train = catalog.queries[catalog.queries["split"] == "train"]
    assert len(paths) == len(catalog.items) * 3 + len(train)  # catalog view + 2 views each, + train photos
    held_out = {str(catalog.path(p)) for p in catalog.queries.loc[catalog.queries["split"] != "train", "image"]}
    assert not held_out & {str(p) for p in paths}
    assert all(len(g) >= 2 for g in groups)


def test_training_lowers_the_loss_and_keeps_the_trunk_frozen(aligned):
    _, model, log = aligned
    assert np.mean(log["losses"][-5:]) < np.mean(log["losses"][:5])
    pretrained = load_pretrained()
    assert torch.equal(model.backbone._blocks[0]._depthwise_conv.weight, pretrained._blocks[0]._depthwise_conv.weight)
    assert not torch.equal(model.backbone._blocks[-1]._project_conv.weight, pretrained._blocks[-1]._project_conv.weight)
    assert log["embeddings"].shape == (log["n_images"], 256)


def test_artifact_round_trip_and_refusals(aligned, tmp_path):
    catalog, model, log = aligned
    version = publish_encoder(model, AlignRecipe(steps=25, batch_size=32), catalog, log, tmp_path / "reg",
                              tmp_path / "work")
    loaded = AlignedEfficientNet.load(resolve(tmp_path / "reg" / "encoder-tiny"))
    paths = catalog.item_images()[:4]
    a = AlignedImageEncoder(model).encode_files(paths, progress=False)
    b = AlignedImageEncoder(loaded).encode_files(paths, progress=False)
    assert np.allclose(a, b, atol=1e-5)
    (version / "encoder.safetensors").write_bytes(b"junk")
    with pytest.raises(RegistryError, match="does not match its sha256"):
        AlignedEfficientNet.load(version)


def test_a_fresh_alignment_seeds_the_image_bank_without_a_second_pass(tiny_world, tmp_path):
    """The bank the generator reads comes from alignment's own head outputs (float16 trunk) plus the
    held-out photos encoded once; it matches V run afresh on every image."""
    from onevision.encoders.visual_tokens import encode_files
    from onevision.generator.data import bank_paths, image_bank, visual_cache
    from training.tokenizer import ensure_encoder

    catalog = load_catalog(tiny_world)
    version, encoder = ensure_encoder(catalog, tmp_path / "reg", AlignRecipe(steps=5, batch_size=32),
                                      progress=False, cache=tmp_path / "cache")
    assert visual_cache(catalog, version, tmp_path / "cache").is_file()
    bank = image_bank(catalog, version, tmp_path / "cache", progress=False)  # a cache hit: no encoding
    keys = bank_paths(catalog)
    assert len(bank.tokens) == len(keys) and bank.row[keys[-1]] == len(keys) - 1
    fresh = encode_files(AlignedEfficientNet.load(version), [catalog.path(k) for k in keys], progress=False)
    assert np.abs(bank.tokens.embedding - fresh.embedding).max() < 1e-2
    assert np.abs(bank.tokens.tokens.astype(np.float32) - fresh.tokens.astype(np.float32)).max() < 5e-2
    held_out = catalog.queries.loc[catalog.queries["split"] != "train", "image"]
    known = encoder.encode_files([catalog.path(p) for p in held_out], progress=False)  # answered, not encoded
    assert np.array_equal(known, bank.tokens.embedding[bank.rows(held_out)])
