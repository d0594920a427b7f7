"""The shopper's price level from their short-term SIDs, and the term it adds to candidates."""

import numpy as np
import pandas as pd
import pytest

from onevision.generator.rank.price_affinity import PriceAffinity, relative_price
from onevision.generator.sid_items import SIDItems


def test_relative_price_is_against_the_category_median():
    items = pd.DataFrame({"category": ["mugs", "mugs", "mugs", "bags", "bags"], "price": [10.0, 20.0, 40.0, 0.0, 50.0]})
    rel = relative_price(items)
    assert rel[1] == 0 and rel[0] == pytest.approx(np.log(0.5)) and rel[2] == pytest.approx(np.log(2))
    assert rel[3] == 0 and rel[4] == pytest.approx(np.log(2))  # a free item (median 25) counts as at the median


def test_level_averages_the_known_short_term_sids_items():
    sids = np.array([[0, 1], [0, 1], [1, 0], [2, 2]])
    prices = PriceAffinity.from_item_sids(sids, np.array([-1.0, 0.0, 1.0, 3.0]))
    short = np.full((3, 5, 2), -1)
    short[0, :2] = [[0, 1], [1, 0]]  # SID (0, 1) holds two items: level -0.5; (1, 0): 1.0
    short[1, 0] = [5, 5]  # not a catalog SID: unknown
    level = prices.level(short)
    assert level[0] == pytest.approx(0.25) and np.isnan(level[1]) and np.isnan(level[2])
    bonus = prices.bonus(level, np.array([0, 0, 1]), np.array([2, 3, 3]))
    assert bonus.tolist() == pytest.approx([-4 * 0.75, -4 * 2.75, 0.0])  # unknown level: no term
    with pytest.raises(ValueError, match="prices"):
        PriceAffinity.from_item_sids(sids, np.zeros(3))


def test_of_variants_sharing_a_sid_the_one_at_the_shoppers_price_level_comes_first():
    # items 0 and 1 look the same and share SID (0, 1); item 0 is cheap, item 1 dear; S_conv prefers 0
    sids = np.array([[0, 1], [0, 1], [1, 1], [2, 0]])
    rel = np.array([-0.7, 0.7, 0.0, 0.7])
    index = SIDItems.build(sids, np.array([5.0, 1.0, 0.0, 0.0]))
    prices = PriceAffinity(index, rel)
    emb = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], np.float32)
    beams, scores, query = (np.array([[[0, 1], [1, 1]]] * 3), np.array([[0.0, -1.0]] * 3),
                            np.array([[0, 1]] * 3, np.float32))
    short = np.full((3, 5, 2), -1)
    short[0, 0] = [2, 0]  # clicked a dear item
    short[1, 0] = [0, 1]  # clicked the mixed SID: level 0, both variants equally far
    level = prices.level(short)

    def ranked(bonus):
        return index.rescore(beams, 3, scores, query, emb, 10.0, bonus)[0].tolist()

    assert ranked(None) == [[0, 1, 2]] * 3  # no term: S_conv inside the SID
    assert ranked(lambda rows, items: prices.bonus(level, rows, items)) == [[1, 0, 2], [0, 1, 2], [0, 1, 2]]
