"""The categories a shopper's recent SIDs favour, and the term it adds to candidates."""

import numpy as np
import pandas as pd
import pytest

from onevision.generator.rank.category_affinity import CategoryAffinity, category_index
from onevision.generator.sid_items import SIDItems


def test_category_index_follows_the_sorted_names():
    items = pd.DataFrame({"category": ["mugs", "bags", "mugs", "vases"]})
    assert category_index(items).tolist() == [1, 0, 1, 2]


def test_lift_is_the_smoothed_log_ratio_of_the_recent_sids_categories_to_the_catalog_share():
    # SID (0, 0) holds two items of category 0, (0, 1) one of each, (1, 0) one of category 1: shares 3/5, 2/5
    sids = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 0]])
    aff = CategoryAffinity.from_item_sids(sids, np.array([0, 0, 0, 1, 1]), prior=1.0)
    recent = np.full((3, 3, 2), -1)
    recent[0, :2] = [[1, 0], [0, 1]]  # category 1 counts 1 + 1/2, category 0 counts 1/2
    recent[1, 0] = [7, 7]  # no catalog item has it: as if absent
    lift = aff.lift(recent)
    share = np.array([0.6, 0.4])
    want = np.log((np.array([0.5, 1.5]) + share) / (3 * share))
    assert lift[0].tolist() == pytest.approx(want.tolist())
    assert lift[1].tolist() == lift[2].tolist() == [0.0, 0.0]  # cold start: no term
    assert aff.bonus(lift, np.array([0, 0, 1]), np.array([4, 0, 4])).tolist() == pytest.approx(
        [2 * want[1], 2 * want[0], 0.0])
    assert aff.lift(np.zeros((2, 0, 2), np.int64)).tolist() == [[0.0, 0.0]] * 2  # no recent SIDs at all


def test_bad_inputs_are_refused():
    sids = np.array([[0, 0], [0, 1]])
    with pytest.raises(ValueError, match="category index"):
        CategoryAffinity.from_item_sids(sids, np.array([0, -1]))
    with pytest.raises(ValueError, match="category index"):
        CategoryAffinity.from_item_sids(sids, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="prior"):
        CategoryAffinity.from_item_sids(sids, np.array([0, 1]), prior=0)


def test_of_lookalikes_the_one_in_the_shoppers_category_comes_first():
    # items 0 (a mug) and 1 (a vase) look alike, in SIDs of their own; the beam prefers the mug
    sids = np.array([[0, 0], [1, 0], [2, 0], [2, 1]])
    index = SIDItems.build(sids, np.ones(4))
    aff = CategoryAffinity(index, np.array([0, 1, 1, 0]))
    emb = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], np.float32)
    beams, scores, query = (np.array([[[0, 0], [1, 0]]] * 2), np.array([[0.0, -0.5]] * 2),
                            np.array([[0, 1]] * 2, np.float32))
    recent = np.full((2, 3, 2), -1)
    recent[0] = [[2, 0], [2, 0], [1, 0]]  # user 0 clicks and buys vases; user 1 is new
    lift = aff.lift(recent)

    def ranked(bonus):
        return index.rescore(beams, 2, scores, query, emb, 10.0, bonus)[0].tolist()

    assert ranked(None) == [[0, 1]] * 2
    assert ranked(lambda rows, items: aff.bonus(lift, rows, items)) == [[1, 0], [0, 1]]
