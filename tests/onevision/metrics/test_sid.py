"""SID quality metrics on hand-made codes whose values are known."""

import numpy as np
import pytest

from onevision.metrics.sid import (
    category_purity,
    code_usage,
    ico,
    icr,
    level_entropy,
    prefix_cur,
    quantized_ann_score,
    sid_report,
    view_consistency,
)

SIDS = np.array([[0, 1, 2], [0, 1, 2], [0, 2, 0], [1, 0, 0]])  # items 0 and 1 collide


def test_ico_and_icr():
    assert ico(SIDS) == pytest.approx(4 / 3)
    assert icr(SIDS) == pytest.approx(0.5)
    assert ico(np.arange(6).reshape(3, 2)) == 1.0 and icr(np.arange(6).reshape(3, 2)) == 1.0


def test_usage_and_prefix_cur():
    assert code_usage(SIDS, [2, 4, 4]) == pytest.approx([1.0, 0.75, 0.5])
    assert prefix_cur(SIDS, [2, 4, 4]) == pytest.approx([2 / 2, 3 / 8, 3 / 32])


def test_entropy():
    h = level_entropy(SIDS, [2, 4, 4])
    assert h[0]["bits"] == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    uniform = level_entropy(np.array([[0], [1], [2], [3]]), [4])[0]
    assert uniform["bits"] == pytest.approx(2.0) and uniform["normalised"] == pytest.approx(1.0)


def test_view_consistency():
    views = np.array([[0, 1, 2], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    view_item = np.array([0, 0, 3, 2])
    assert view_consistency(SIDS, views, view_item) == pytest.approx([1.0, 0.75, 0.5])


def test_category_purity():
    assert category_purity(np.array([0, 0, 0, 1]), ["a", "a", "b", "c"]) == pytest.approx(3 / 4)
    assert category_purity(np.array([0, 1]), ["a", "b"]) == 1.0


def test_qas():
    items = np.eye(3, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0], [0, 0.2, 0.8], [0.6, 0.5, 0]], dtype=np.float32)
    m = quantized_ann_score(items, queries, np.array([0, 2, 1]), k=4)
    assert m["HR@4"] == pytest.approx(1.0)
    assert m["MRR@4"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_report_and_bad_shape():
    r = sid_report(SIDS, [2, 4, 4], ["a", "a", "b", "c"], SIDS[:2], np.array([0, 1]))
    assert r["view_consistency"] == [1.0, 1.0, 1.0] and r["ICO"] == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="SIDs must be"):
        ico(np.zeros(3))
