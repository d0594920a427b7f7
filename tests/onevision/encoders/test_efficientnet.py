import numpy as np
import pytest
import torch
from PIL import Image

from onevision.encoders import get_encoder
from onevision.encoders.efficientnet import EfficientNetLite0, load_pretrained, pretrained_weights_path


@pytest.fixture(scope="module")
def efficientnet():
    return get_encoder("efficientnet")


def test_pretrained_weights_load_without_pickles_and_match_the_model():
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    assert "_fc.weight" in state
    model = load_pretrained()
    assert torch.equal(model._conv_stem.weight, state["_conv_stem.weight"])


def test_mismatched_weights_are_refused(tmp_path):
    bad = {k: v for k, v in EfficientNetLite0().state_dict().items() if not k.startswith("_conv_head")}
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError, match="do not match"):
        load_pretrained(path)


def test_encoder_outputs_unit_vectors_and_a_token_grid(efficientnet):
    imgs = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    vecs = efficientnet.encode_arrays(imgs)
    assert vecs.shape == (2, 1280)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    out = efficientnet.model.encode(efficientnet.preprocess(imgs))
    assert out.tokens.shape == (2, 49, 320)  # 224 px input -> 7 x 7 grid of 320-d tokens


def test_encoding_is_deterministic_and_batch_independent(efficientnet, tiny_world):
    paths = sorted((tiny_world / "images" / "items").rglob("catalog.jpg"))[:6]
    a = efficientnet.encode_files(paths, progress=False)
    b = np.concatenate([efficientnet.encode_files(paths[:2], progress=False),
                        efficientnet.encode_files(paths[2:], progress=False)])
    assert np.allclose(a, b, atol=1e-5)


def test_pixel_encoder_matches_identical_images(tiny_world):
    enc = get_encoder("pixels")
    paths = sorted((tiny_world / "images" / "items").rglob("catalog.jpg"))[:4]
    v = enc.encode_files(paths + paths[:1], progress=False)
    assert v.shape == (5, 32 * 32 * 3)
    assert float(v[0] @ v[4]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[1]) < 0.99


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder 'clip'"):
        get_encoder("clip")
