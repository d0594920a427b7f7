"""The fast beam search returns only catalog SIDs, and exactly what transformers' beam search
with a Python prefix trie returns on the same weights."""

import numpy as np
import pytest
import torch

from onevision.generator.decode.beam import beam_search
from onevision.generator.decode.reference import dict_trie, generate_reference
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.model import SIDBart, bart_config
from onevision.generator.prompt.vocab import SIDVocab

SIZES = (16, 8, 8, 4, 4)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    vocab = SIDVocab(SIZES)
    model = SIDBart(bart_config(vocab, "tiny")).eval()
    sids = np.random.default_rng(0).integers(0, SIZES, (3000, len(SIZES)))
    return model, vocab, SIDTrie(sids, SIZES), torch.randn(4, 7, model.config.d_model)


def reference(model, vocab, trie, x, beam):
    return generate_reference(model, x, None, dict_trie(model, trie.sids), beam)


@pytest.mark.parametrize("beam", [10, 32])
def test_identical_to_transformers_generate(setup, beam):
    model, vocab, trie, x = setup
    ours = beam_search(model, x, None, trie, beam=beam)
    assert (ours.sids == reference(model, vocab, trie, x, beam)).all()
    assert (np.diff(ours.scores, axis=1) <= 0).all()


def test_padded_prompt_positions_are_ignored_as_transformers_ignores_them(setup):
    model, vocab, trie, x = setup
    mask = torch.ones(x.shape[:2], dtype=torch.long)
    mask[0, 3:5] = 0  # e.g. a cold-start user's empty slots
    mask[2, 5:] = 0
    ours = beam_search(model, x, mask, trie, beam=10)
    assert (ours.sids == generate_reference(model, x, mask, dict_trie(model, trie.sids), 10)).all()
    noisy = x.clone()
    noisy[0, 3:5] = torch.randn(2, x.shape[-1]) * 10  # what a masked position holds must not matter
    again = beam_search(model, noisy, mask, trie, beam=10)
    assert (again.sids[0] == ours.sids[0]).all()
    np.testing.assert_allclose(again.scores[0], ours.scores[0], rtol=1e-5)


def test_every_sid_is_a_catalog_sid_batched_or_not(setup):
    model, _, trie, x = setup
    batched = beam_search(model, x, None, trie, beam=16)
    assert trie.contains(batched.sids.reshape(-1, len(SIZES))).all()
    for i in range(len(x)):
        single = beam_search(model, x[i:i + 1], None, trie, beam=16)
        assert (single.sids[0] == batched.sids[i]).all()
        np.testing.assert_allclose(single.scores[0], batched.scores[i], rtol=1e-5)


def test_without_the_constraint_sids_leave_the_catalog(setup):
    model, _, trie, x = setup
    free = beam_search(model, x, None, trie, beam=16, constrained=False)
    assert not trie.contains(free.sids.reshape(-1, len(SIZES))).all()
    ours = beam_search(model, x, None, trie, beam=16)
    assert (free.scores[:, 0] >= ours.scores[:, 0] - 1e-5).all()  # the constraint can only cost score
