"""The categories a shopper's recent items favour, and the term it adds to candidates."""

import numpy as np
import pandas as pd
import pytest

from onevision.generator.category_affinity import CategoryAffinity, category_index
from onevision.generator.retrieve import SIDItems


def test_category_index_follows_the_sorted_names():
    items = pd.DataFrame({"category": ["mugs", "bags", "mugs", "vases"]})
    assert category_index(items).tolist() == [1, 0, 1, 2]


def test_lift_is_the_smoothed_log_ratio_to_the_catalog_share():
    aff = CategoryAffinity(np.array([0, 0, 0, 1]), prior=1.0)  # shares 3/4 and 1/4
    lift = aff.lift(np.array([[3, 3, -1], [-1, -1, -1], [0, 1, 2]]))
    # user 0: two items of category 1 -> P(1) = (2 + 1/4) / 3, P(0) = (0 + 3/4) / 3
    assert lift[0].tolist() == pytest.approx([np.log((0.75 / 3) / 0.75), np.log((2.25 / 3) / 0.25)])
    assert lift[1].tolist() == [0.0, 0.0]  # cold start: no term
    assert lift[2, 0] > 0 > lift[2, 1]  # all three recent items are category 0
    assert aff.bonus(lift, np.array([0, 0, 1]), np.array([3, 0, 3])).tolist() == pytest.approx(
        [2 * lift[0, 1], 2 * lift[0, 0], 0.0])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="category index"):
        CategoryAffinity(np.array([0, -1]))
    with pytest.raises(ValueError, match="prior"):
        CategoryAffinity(np.array([0, 1]), prior=0)
    with pytest.raises(ValueError, match="below 2"):
        CategoryAffinity(np.array([0, 1])).lift(np.array([[2]]))


def test_of_lookalikes_the_one_in_the_shoppers_category_comes_first():
    # items 0 (a mug) and 1 (a vase) look alike, in SIDs of their own; S_conv and the beam prefer the mug
    sids = np.array([[0, 0], [1, 0], [2, 0], [2, 1]])
    category = np.array([0, 1, 1, 0])
    index = SIDItems.build(sids, np.ones(4))
    aff = CategoryAffinity(category)
    emb = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], np.float32)
    beams, scores, query = np.array([[[0, 0], [1, 0]]] * 2), np.array([[0.0, -0.5]] * 2), np.array([[0, 1]] * 2, np.float32)
    recent = np.array([[2, 2, 1, -1], [-1, -1, -1, -1]])  # user 0 buys vases; user 1 is new
    lift = aff.lift(recent)

    def ranked(bonus):
        return index.rescore(beams, 2, scores, query, emb, 10.0, bonus)[0].tolist()

    assert ranked(None) == [[0, 1]] * 2
    assert ranked(lambda rows, items: aff.bonus(lift, rows, items)) == [[1, 0], [0, 1]]
