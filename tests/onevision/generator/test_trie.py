import numpy as np
import pytest

import onevision.generator.decode.trie as trie_module
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.prompt.vocab import SIDVocab

SIZES = (16, 8, 8, 4, 4)


def sids(n=2000, seed=0):
    return np.random.default_rng(seed).integers(0, SIZES, (n, len(SIZES)))


def test_contains_exactly_the_catalog_sids():
    s = sids()
    t = SIDTrie(s, SIZES)
    assert t.contains(s).all()
    others = sids(5000, seed=1)
    known = {tuple(r) for r in s.tolist()}
    assert (t.contains(others) == np.array([tuple(r) in known for r in others.tolist()])).all()


def test_allowed_codes_are_the_children_of_each_prefix():
    s = sids()
    t = SIDTrie(s, SIZES)
    nodes = np.zeros(len(s), dtype=np.int64)
    for level in range(len(SIZES)):
        allowed = t.allowed(level, nodes).numpy()
        assert allowed[np.arange(len(s)), s[:, level]].all()
        prefixes = {}
        for row in s.tolist():
            prefixes.setdefault(tuple(row[:level]), set()).add(row[level])
        for i in range(0, len(s), 97):
            assert set(np.flatnonzero(allowed[i])) == prefixes[tuple(s[i, :level])]
        nodes = t.advance(level, nodes, s[:, level])
        assert (nodes >= 0).all()


def test_csr_masks_equal_dense_masks(monkeypatch):
    s = sids()
    dense = SIDTrie(s, SIZES)
    monkeypatch.setattr(trie_module, "DENSE_LIMIT", 0)
    csr = SIDTrie(s, SIZES)
    assert all(m is None for m in csr.dense)
    for level in range(len(SIZES)):
        nodes = np.random.default_rng(level).integers(0, dense.n_nodes[level], 300)
        assert (csr.allowed(level, nodes) == dense.allowed(level, nodes)).all()


def test_bad_sids_are_refused():
    with pytest.raises(ValueError, match="outside"):
        SIDTrie(np.array([[16, 0, 0, 0, 0]]), SIZES)
    with pytest.raises(ValueError, match="5 codes"):
        SIDTrie(np.array([[1, 2]]), SIZES)


def test_vocab_round_trip():
    v = SIDVocab(SIZES)
    s = sids(50)
    assert (v.codes(v.tokens(s)) == s).all()
    assert v.tokens(s).min() >= 6 and v.tokens(s).max() < v.size
