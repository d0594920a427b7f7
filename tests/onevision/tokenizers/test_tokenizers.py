"""Every tokenizer: fits, gives valid codes, round-trips through safetensors, refuses bad state."""

import numpy as np
import pytest

from onevision.tokenizers import METHODS, TokenizerError, default_sizes, make_tokenizer
from onevision.tokenizers.base import PairData, TokenizerInputs
from onevision.tokenizers.vrq import VRQTraining

FAST = {"vrq": {"training": VRQTraining(dim=16, warmup_steps=20, steps=40, batch_size=64)}, "rqvae": {"steps": 40}}


def _world(n_items=300, views=2, seed=0):
    """Items in 10 visual clusters with 3 categories; views are noisy copies of their item."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, 32))
    cluster = rng.integers(10, size=n_items)
    vis = centres[cluster] + 0.3 * rng.normal(size=(n_items, 32))
    vis /= np.linalg.norm(vis, axis=1, keepdims=True)
    cat_text = rng.normal(size=(3, 24))
    text = cat_text[cluster % 3]
    business = np.abs(rng.normal(size=(n_items, 4))) + 0.1
    items = TokenizerInputs(vis.astype(np.float32), text.astype(np.float32), business.astype(np.float32))
    item = np.repeat(np.arange(n_items), views)
    pv = vis[item] + 0.05 * rng.normal(size=(len(item), 32))
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    pairs = PairData(TokenizerInputs(pv.astype(np.float32), text[item].astype(np.float32),
                                     np.zeros((len(item), 4), np.float32)), item)
    return items, pairs


SIZES = {"vrq": (16, 8, 4, 4, 4), "rq-kmeans": (16, 8, 4), "rq-opq": (16, 8, 4, 4, 4), "opq": (4,) * 5,
         "rqvae": (16, 8, 4)}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fit_encode_roundtrip(method):
    items, pairs = _world()
    tok = make_tokenizer(method, SIZES[method], seed=0, options=FAST.get(method))
    tok.fit(items, pairs, progress=False)
    codes = tok.encode(items)
    assert codes.shape == (300, len(SIZES[method]))
    assert (codes >= 0).all() and (codes < np.array(SIZES[method])).all()
    assert tok.quantized(items).shape[0] == 300
    again = type(tok).from_state(tok.config(), tok.state())
    assert np.array_equal(again.encode(items), codes)
    assert np.allclose(again.quantized(items), tok.quantized(items), atol=1e-5)


def test_vrq_deep_levels_separate_visually_identical_items():
    items, pairs = _world()
    items.visual[1] = items.visual[0]  # a price-only variant: same pixels, other business stats
    items.text[1] = items.text[0]
    items.business[1] = items.business[0] * 5
    tok = make_tokenizer("vrq", SIZES["vrq"], options=FAST["vrq"])
    tok.fit(items, pairs, progress=False)
    codes = tok.encode(items)
    assert (codes[0, :3] == codes[1, :3]).all() and (codes[0] != codes[1]).any()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_mismatched_state_is_refused(method):
    items, pairs = _world()
    tok = make_tokenizer(method, SIZES[method], options=FAST.get(method))
    tok.fit(items, pairs, progress=False)
    config = {**tok.config(), "sizes": [2 * k for k in SIZES[method]]}  # other codebook sizes
    with pytest.raises(TokenizerError, match="config implies"):
        type(tok).from_state(config, tok.state())
    state = tok.state()
    state.pop(sorted(state)[0])
    with pytest.raises(TokenizerError, match="has no array"):
        type(tok).from_state(tok.config(), state)


def test_default_sizes_follow_the_catalog():
    assert default_sizes(5000, "vrq") == (64, 32, 16, 16, 16)
    assert default_sizes(5000, "rq-kmeans") == (64, 32, 16)
    assert default_sizes(120, "vrq") == (8, 4, 4, 4, 4)
    assert default_sizes(5000, "opq") == (16,) * 5


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown tokenizer method 'fsq'"):
        make_tokenizer("fsq", (4,))
