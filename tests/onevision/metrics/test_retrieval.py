import numpy as np
import pytest

from onevision.metrics.retrieval import hit_rate, mrr, retrieval_metrics, target_ranks


def test_ranks_and_metrics_on_hand_made_lists():
    ranked = np.array([[5, 1, 2, 3], [1, 5, 2, 3], [2, 3, 4, 5], [9, 8, 7, -1]])
    targets = np.array([5, 5, 5, 1])
    ranks = target_ranks(ranked, targets)
    assert ranks.tolist() == [1, 2, 4, 0]
    assert hit_rate(ranks, 1) == pytest.approx(0.25)
    assert hit_rate(ranks, 4) == pytest.approx(0.75)
    assert mrr(ranks, 4) == pytest.approx((1 + 0.5 + 0.25 + 0) / 4)
    assert mrr(ranks, 1) == pytest.approx(0.25)
    m = retrieval_metrics(ranked, targets)
    assert set(m) == {"HR@1", "HR@4", "MRR@4", "HR@10", "MRR@10"}
    assert m["HR@10"] == pytest.approx(0.75)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        target_ranks(np.zeros((3, 4)), np.zeros(2))


def test_empty_query_set_gives_nan():
    assert np.isnan(hit_rate(np.array([]), 1))
