"""The items' ANN index serving holds: exact up to a size, HNSW beyond, with the exact search's
neighbours found (recall@10 against exact search)."""

from __future__ import annotations

import numpy as np
import pytest

from onevision.ann import ItemIndex


def _brute(items: np.ndarray, photos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = photos @ items.T
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, rows, 1), rows


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _catalog(n: int, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items in clusters (as V's embeddings of product families are), and photos near some of them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 20, d))
    items = _unit(centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, d)))
    photos = _unit(items[rng.integers(0, n, 200)] + 0.2 * rng.standard_normal((200, d)))
    return items, photos


def test_small_catalogs_are_searched_exactly():
    items, photos = _catalog(2_000)
    index = ItemIndex(items)
    assert index.kind == "exact"
    sims, rows = index.search(photos, 10)
    exact_sims, exact_rows = _brute(items, photos, 10)
    assert np.allclose(sims, exact_sims, atol=1e-5)
    assert np.mean(rows == exact_rows) > 0.99  # the same items (float rounding may swap near ties)
    assert index.search(photos[:1], 5_000)[1].shape == (1, 2_000)  # k beyond the catalog: all of it


def test_beyond_the_exact_size_hnsw_finds_the_exact_neighbours():
    items, photos = _catalog(20_000)
    index = ItemIndex(items, exact_up_to=10_000)
    assert index.kind == "hnsw"
    _, rows = index.search(photos, 10)
    _, exact = _brute(items, photos, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)])
    assert recall >= 0.95, recall
    assert index.search(photos[:2], 300)[1].shape == (2, 300)  # more hits than efSearch's default


def test_the_index_holds_the_only_copy_and_its_views_keep_it_alive():
    import gc

    items, _ = _catalog(3_000)
    for exact_up_to in (10_000, 1_000):  # exact, then HNSW
        vectors = ItemIndex(items, exact_up_to=exact_up_to).vectors  # the index itself is dropped here
        gc.collect()
        _ = np.ones((3_000, 64), np.float32) * 7  # memory a freed index would have handed back
        if exact_up_to > len(items):
            assert vectors.dtype == np.float32 and np.array_equal(vectors, items)
        else:  # HNSW keeps float16 copies
            assert vectors.dtype == np.float16 and np.abs(vectors - items).max() < 1e-3
        assert not vectors.flags.writeable


def test_l2_search_finds_the_nearest_vectors_of_any_length():
    rng = np.random.default_rng(3)
    items = rng.standard_normal((500, 16)).astype(np.float32) * rng.uniform(0.1, 5, (500, 1)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    _, rows = ItemIndex(items, metric="l2").search(queries, 1)
    assert (rows[:, 0] == ((queries[:, None] - items[None]) ** 2).sum(-1).argmin(1)).all()
    with pytest.raises(ValueError, match="unknown metric"):
        ItemIndex(items, metric="cosine")
