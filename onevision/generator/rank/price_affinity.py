"""The price level a shopper's recent SIDs reveal, and how far each candidate is from it.

Near-duplicate variants often differ only in price, which no photo shows, and shoppers buy at
their own price level. The items behind a user's short-term SIDs (their last clicks) say where
that level is: the mean log price of those items relative to their category's median price.
The searcher adds `-weight x |relative price - level|` to each candidate's score, so among
variants the photo cannot tell apart the one at the shopper's level comes first; a cold-start
user (no short-term SIDs) gets no term.

The weight 4 was chosen when both splits of `bench/personalization_headroom.py` picked it. With
the models of the latest small-world rebuild (ORDER HR@1, beam 256, val + test): the user SIDs in
the prompt alone add +0.00 points over blank user features, this term +1.61, and with the
category term (`category_affinity`) +2.88. The long-term SID's items and colour/brand lifts from
the whole history were tried and gave less on the split they were not fitted on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onevision.generator.sid_items import SIDItems

PRICE_WEIGHT = 4.0


def relative_price(items: pd.DataFrame) -> np.ndarray:
    """log(price / the median known price of the item's category), per item row; 0 for a free item,
    NaN for an unknown price (no price term for it, and a SID holding it reveals no level)."""
    price = items["price"].to_numpy(np.float64)
    median = items.groupby("category")["price"].transform("median").to_numpy(np.float64)
    ok = (price > 0) & (median > 0)
    rel = np.where(ok, np.log(np.where(ok, price, 1.0) / np.where(ok, median, 1.0)), 0.0)
    return np.where(np.isnan(price), np.nan, rel)


class PriceAffinity:
    def __init__(self, items: SIDItems, item_relative_price: np.ndarray, weight: float = PRICE_WEIGHT):
        rel = np.asarray(item_relative_price, np.float64)
        if len(rel) != len(items.members):
            raise ValueError(f"{len(items.members)} SIDs but {len(rel)} prices")
        self.items = items
        self.sid_level = items.group_means(rel, np.nan)  # row -1: unknown SID
        self.item_relative_price, self.weight = rel, weight

    @classmethod
    def from_item_sids(cls, item_sids: np.ndarray, item_relative_price: np.ndarray,
                       weight: float = PRICE_WEIGHT) -> "PriceAffinity":
        return cls(SIDItems.build(item_sids, np.zeros(len(item_sids))), item_relative_price, weight)

    def level(self, sids: np.ndarray) -> np.ndarray:
        """(B, S, L) user SIDs (-1 rows missing) -> (B,) mean relative price of their items; NaN
        for a user with none known."""
        levels = self.sid_level[self.items.slot_groups(sids)]
        known = np.isfinite(levels)
        total = np.where(known, levels, 0.0).sum(1)
        return np.where(known.any(1), total / np.maximum(known.sum(1), 1), np.nan)

    def bonus(self, level: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The term added to candidate `items` of query `rows` (0 where the level is unknown)."""
        gap = np.abs(self.item_relative_price[items] - level[rows])
        return np.where(np.isfinite(gap), -self.weight * gap, 0.0)
