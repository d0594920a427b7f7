"""The similarity look-ahead: each prefix's bonus is the best photo-item cosine under it; the
guided beam ranks by log-probability + that bonus (exactly the searcher's SID score at the last
level), returns log-probabilities, stays batch-invariant, and keeps the photo's item at a
narrow beam."""

import numpy as np
import pytest
import torch

from onevision.generator.decode.beam import beam_search
from onevision.generator.decode.lookahead import SimilarityGuide
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.model import SIDBart, bart_config
from onevision.generator.prompt.vocab import SIDVocab
from onevision.generator.sid_items import SIDItems

SIZES = (8, 4, 4, 3)


def grouped(item_sids):
    return SIDItems.build(item_sids, np.zeros(len(item_sids)))


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    item_sids = rng.integers(0, SIZES, (300, len(SIZES)))  # some items share a SID
    emb = rng.normal(size=(len(item_sids), 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    trie = SIDTrie(item_sids, SIZES)
    model = SIDBart(bart_config(SIDVocab(SIZES), "tiny")).eval()
    return model, trie, item_sids, emb, torch.randn(3, 6, model.config.d_model)


def guide_of(trie, item_sids, emb, neighbours=None):
    """The guide, exact (every item a neighbour) unless `neighbours` says fewer."""
    return SimilarityGuide(trie, grouped(item_sids), emb, neighbours or len(emb))


@pytest.mark.parametrize("neighbours", [300, 20])
def test_each_extension_scores_its_best_cosine_or_the_kth_neighbours(setup, neighbours):
    """With every item a neighbour, each one-code extension of a beam's prefixes gets weight x the
    best cosine under it; with fewer, those holding a neighbour still do, and every other one gets
    weight x the K-th neighbour's cosine: never less than its own best (admissible)."""
    _, trie, item_sids, emb, _ = setup
    query = emb[[5, 77]] * 0.9 + 0.1 * emb[[1, 2]]
    bonuses = guide_of(trie, item_sids, emb, neighbours).bonuses(query, 3.0)
    cos = query @ emb.T
    kth = 3.0 * np.sort(cos, 1)[:, ::-1][:, neighbours - 1]
    rng = np.random.default_rng(0)
    checked = {"exact": 0, "bound": 0}
    for level in range(trie.levels):
        prefixes = np.unique(trie.sids[:, :level], axis=0) if level else np.zeros((1, 0), np.int64)
        width = min(5, len(prefixes))
        nodes = np.stack([rng.choice(len(prefixes), size=width, replace=False) for _ in range(2)])
        got = bonuses.at(level, torch.from_numpy(nodes)).numpy().reshape(2, width, SIZES[level])
        for r in range(2):
            for w, node in enumerate(nodes[r]):
                for code in range(SIZES[level]):
                    under = (item_sids[:, :level] == prefixes[node]).all(1) & (item_sids[:, level] == code)
                    if not under.any():
                        continue  # not in the trie: the beam's mask has made it -inf
                    best = 3.0 * cos[r, under].max()
                    if best >= kth[r] - 1e-6:
                        assert got[r, w, code] == pytest.approx(best, abs=1e-5)
                        checked["exact"] += 1
                    else:
                        assert got[r, w, code] == pytest.approx(kth[r], abs=1e-5) and got[r, w, code] >= best
                        checked["bound"] += 1
    assert checked["exact"] > 20 and (checked["bound"] > 20) == (neighbours < len(emb)), checked


def test_the_guide_refuses_items_of_another_trie(setup):
    _, trie, item_sids, emb, _ = setup
    with pytest.raises(ValueError, match="trie's SIDs"):
        SimilarityGuide(trie, grouped(item_sids[:100]), emb[:100])


def test_a_zero_weight_guide_changes_nothing(setup):
    model, trie, item_sids, emb, x = setup
    plain = beam_search(model, x, None, trie, beam=6)
    zero = beam_search(model, x, None, trie, beam=6,
                       guide=guide_of(trie, item_sids, emb).bonuses(emb[:3], 0.0))
    assert (plain.sids == zero.sids).all()
    np.testing.assert_allclose(plain.scores, zero.scores, rtol=1e-6)


def test_an_exhaustive_guided_beam_ranks_every_sid_by_log_prob_plus_its_best_cosine(setup):
    model, trie, item_sids, emb, x = setup
    query = emb[[10, 20, 30]]
    weight = 2.0
    everything = beam_search(model, x, None, trie, beam=len(trie.sids))  # every SID with its log-prob
    guided = beam_search(model, x, None, trie, beam=len(trie.sids),
                         guide=guide_of(trie, item_sids, emb).bonuses(query, weight))
    for r in range(len(x)):
        logp = {tuple(s): v for s, v in zip(everything.sids[r].tolist(), everything.scores[r])}
        best = {}
        for sid, c in zip(map(tuple, item_sids.tolist()), query[r] @ emb.T):
            best[sid] = max(best.get(sid, -2.0), float(c))
        got = [tuple(s) for s in guided.sids[r].tolist()]
        assert set(got) == set(logp)
        np.testing.assert_allclose(guided.scores[r], [logp[s] for s in got], rtol=1e-5)  # log-probs, not keys
        key = np.array([logp[s] + weight * best[s] for s in got])
        assert (np.diff(key) <= 1e-4).all()


def test_a_narrow_guided_beam_keeps_the_photos_item(setup):
    model, trie, item_sids, emb, x = setup
    targets = [3, 150, 299]
    guide = guide_of(trie, item_sids, emb).bonuses(emb[targets], 100.0)
    guided = beam_search(model, x, None, trie, beam=1, guide=guide)
    assert (guided.sids[:, 0] == item_sids[targets]).all()
    plain = beam_search(model, x, None, trie, beam=1)
    assert not (plain.sids[:, 0] == item_sids[targets]).all(1).all()  # what the plain beam misses


def test_a_few_neighbours_keep_the_photos_item_in_a_narrow_beam(setup):
    model, trie, item_sids, emb, x = setup
    targets = [3, 150, 299]
    guide = guide_of(trie, item_sids, emb, neighbours=8).bonuses(emb[targets], 100.0)
    guided = beam_search(model, x, None, trie, beam=1, guide=guide)
    assert (guided.sids[:, 0] == item_sids[targets]).all()


def test_guided_search_is_batch_invariant(setup):
    model, trie, item_sids, emb, x = setup
    guide = guide_of(trie, item_sids, emb)
    batched = beam_search(model, x, None, trie, beam=4, guide=guide.bonuses(emb[:3], 5.0))
    for i in range(len(x)):
        single = beam_search(model, x[i:i + 1], None, trie, beam=4, guide=guide.bonuses(emb[i:i + 1], 5.0))
        assert (single.sids[0] == batched.sids[i]).all()
        np.testing.assert_allclose(single.scores[0], batched.scores[i], rtol=1e-5)
    assert trie.contains(batched.sids.reshape(-1, len(SIZES))).all()


def test_the_guide_needs_the_constraint(setup):
    model, trie, item_sids, emb, x = setup
    with pytest.raises(ValueError, match="constrained"):
        beam_search(model, x, None, trie, beam=2, constrained=False,
                    guide=guide_of(trie, item_sids, emb).bonuses(emb[:3], 1.0))
