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
