"""SIDs to items: groups ordered by S_conv (eq. 13), beams' order kept, or every item re-scored by its
own similarity to the photo; the low-confidence flag."""

import numpy as np
import pandas as pd
import pytest

from onevision.generator.sid_items import SIDItems, calibrate_threshold, low_confidence, s_conv


def test_s_conv_is_eq_13():
    items = pd.DataFrame({"clicks_30d": [10, 0], "gmv_30d": [100.0, 50.0], "orders_30d": [1, 2]})
    assert np.allclose(s_conv(items, (1.0, 0.01, 5.0)), [10 + 1 + 5, 0.5 + 10])
    assert np.allclose(s_conv(pd.DataFrame({"x": [1, 2]})), 0)


def test_items_inside_a_sid_follow_s_conv_and_sids_follow_the_beam():
    sids = np.array([[0, 1], [2, 0], [0, 1], [0, 1], [1, 1]])
    score = np.array([1.0, 9.0, 5.0, 3.0, 0.0])
    index = SIDItems.build(sids, score)
    assert index.groups(np.array([[0, 1], [1, 1], [3, 3], [1, 0]])).tolist()[2:] == [-1, -1]
    ranked = index.rank(np.array([[[0, 1], [2, 0], [1, 1]]]), k=4)
    assert ranked.tolist() == [[2, 3, 0, 1]]  # S_conv 5, 3, 1 inside (0, 1), then the next SID
    assert index.rank(np.array([[[3, 3]]]), k=3).tolist() == [[-1, -1, -1]]


def test_low_confidence_flags_queries_far_from_their_results():
    items = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0, 0.6, 0.8]], np.float32)
    ranked = np.array([[0, 1], [0, 1]])
    flag, best = low_confidence(queries, items, ranked, threshold=0.7, top_k=2)
    assert flag.tolist() == [False, True] and np.allclose(best, [1.0, 0.6])
    t = calibrate_threshold(np.eye(3), np.eye(3), quantile=0.5)
    assert np.isclose(t, 1.0)


def test_each_sids_best_similarity_is_its_closest_item():
    sids = np.array([[0, 1], [0, 1], [1, 1]])
    emb = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    index = SIDItems.build(sids, np.zeros(3))
    query = np.array([[0, 1], [1, 0]], np.float32)
    beams = np.array([[[0, 1], [1, 1], [3, 3]], [[1, 1], [0, 1], [0, 1]]])
    best = index.rescore(beams, 3, np.zeros((2, 3)), query, emb, similarity_weight=1.0)[1]
    assert np.allclose(best, [[0.8, 1.0, -1.0], [0.0, 1.0, 1.0]])


def test_rescored_items_follow_their_own_similarity_and_s_conv_breaks_ties():
    # SID (0, 1) holds items 0, 1 and 3 (S_conv 9, 5, 1); SID (1, 1) holds item 2
    sids = np.array([[0, 1], [0, 1], [1, 1], [0, 1]])
    index = SIDItems.build(sids, np.array([9.0, 5.0, 0.0, 1.0]))
    emb = np.array([[1, 0], [0, 1], [0.6, 0.8], [0, 1]], np.float32)
    beams = np.array([[[0, 1], [1, 1], [2, 2]]])
    scores = np.array([[0.0, -1.0, -np.inf]])
    query = np.array([[0, 1]], np.float32)
    assert index.rank(beams, k=5).tolist() == [[0, 1, 3, 2, -1]]  # beam order, S_conv inside
    # 0 + 10 x 1 for items 1 and 3 (tied: S_conv 5 before 1), -1 + 10 x 0.8 for item 2, 0 + 0 for item 0
    assert index.rank(beams, 5, scores, query, emb, similarity_weight=10.0).tolist() == [[1, 3, 2, 0, -1]]
    # weight 0: log-prob order, S_conv inside a SID; a -inf beam holds no items
    assert index.rank(beams, 5, scores, query, emb).tolist() == [[0, 1, 3, 2, -1]]
    assert index.rank(beams, 2, scores, query, emb, similarity_weight=10.0).tolist() == [[1, 3]]
    ranked_scores = index.rescore(beams, 5, scores, query, emb, similarity_weight=10.0)[2]
    assert ranked_scores[0].tolist() == pytest.approx([10.0, 10.0, 7.0, 0.0, -np.inf])  # what ranked them
