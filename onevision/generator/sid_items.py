"""From generated SIDs to a ranked item list, and a low-confidence flag.

Several items can share a SID (near duplicates); inside a SID they are ordered by S_conv
(OneVision eq. 13: w1 clicks_30d + w2 GMV_30d + w3 orders_30d), and SIDs keep the beam's order.
The beam's log-probabilities can be re-scored with the photo's similarity to the items
(`SearchConfig.similarity_weight`): the generator's runners-up are poorly calibrated
(its 4th beam averages log-prob -11.6), and the items' own V similarity separates them. The
re-score is per item (its SID's log-prob + weight x its own cosine), so S_conv then only orders
items the photo cannot tell apart.
The flag says the results may not be the product in the photo: when none of the top-K items'
image embeddings is at least `threshold` cosine-similar to the query's (OneVision 3.4's
top-K similarity check).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

S_CONV_WEIGHTS = (1.0, 0.01, 5.0)  # eq. 13: clicks, GMV, orders in the 30-day window


def s_conv(items: pd.DataFrame, weights: tuple[float, float, float] = S_CONV_WEIGHTS) -> np.ndarray:
    """Eq. 13 from a catalog's 30-day columns (missing columns count as zero)."""
    return s_conv_of(np.stack([items[c].to_numpy(np.float64) if c in items.columns else np.zeros(len(items))
                               for c in ("clicks_30d", "orders_30d", "gmv_30d")], 1), weights)


def s_conv_of(stats: np.ndarray, weights: tuple[float, float, float] = S_CONV_WEIGHTS) -> np.ndarray:
    """Eq. 13 from (N, 3) clicks, orders, GMV; an unknown GMV (orders at unknown prices) counts as
    the median known one."""
    clicks, orders, gmv = (np.asarray(stats, np.float64)[:, c] for c in range(3))
    known = np.isfinite(gmv)
    gmv = np.where(known, gmv, np.median(gmv[known]) if known.any() else 0.0)
    return weights[0] * clicks + weights[1] * gmv + weights[2] * orders


@dataclass
class SIDItems:
    """Items grouped by SID, each group ordered by S_conv (best first)."""

    sids: np.ndarray  # (G, L) distinct SIDs, lexicographic
    starts: np.ndarray  # (G + 1,) group g's items are members[starts[g]:starts[g + 1]]
    members: np.ndarray  # item rows
    _dims: np.ndarray = field(init=False, repr=False, compare=False)  # (L,) each level's largest code + 1
    _keys: np.ndarray = field(init=False, repr=False, compare=False)  # (G,) the SIDs raveled, ascending

    def __post_init__(self) -> None:  # once, not on every lookup: they cost as much as the catalog
        self._dims = self.sids.max(0) + 1
        self._keys = np.ravel_multi_index(self.sids.T, self._dims)

    @classmethod
    def build(cls, item_sids: np.ndarray, score: np.ndarray) -> "SIDItems":
        sids, group = np.unique(np.asarray(item_sids, np.int64), axis=0, return_inverse=True)
        group = group.reshape(-1)
        order = np.lexsort((np.arange(len(group)), -np.asarray(score, np.float64), group))
        starts = np.searchsorted(group[order], np.arange(len(sids) + 1))
        return cls(sids, starts, order)

    @classmethod
    def build_live(cls, item_sids: np.ndarray, item_ids: Sequence[str], catalog_s_conv: np.ndarray,
                   live: Mapping[str, float]) -> "SIDItems":
        """`build` on S_conv from the online store (eq. 13 over the live 30-day stats; item id ->
        value) where it has the item, the catalog's otherwise."""
        score = [live.get(i, c) for i, c in zip(item_ids, np.asarray(catalog_s_conv, np.float64))]
        return cls.build(item_sids, np.asarray(score, np.float64))

    def groups(self, sids: np.ndarray) -> np.ndarray:
        """Group index of each SID (N, L), -1 where no item has it."""
        sids = np.atleast_2d(np.asarray(sids, np.int64))
        keys = np.ravel_multi_index(sids.T, self._dims, mode="clip")
        mine = self._keys
        pos = np.minimum(np.searchsorted(mine, keys), len(mine) - 1)
        ok = (mine[pos] == keys) & (sids < self._dims).all(1)
        return np.where(ok, pos, -1)

    def slot_groups(self, sids: np.ndarray) -> np.ndarray:
        """(..., L) SIDs that may be missing (a -1 code) -> (...) group index, -1 where missing or
        no item has it: how a prompt's user and hint slots look up their items."""
        sids = np.asarray(sids, np.int64)
        flat = sids.reshape(-1, sids.shape[-1])
        return np.where((flat < 0).any(1), -1, self.groups(np.maximum(flat, 0))).reshape(sids.shape[:-1])

    def group_means(self, values: np.ndarray, unknown: float) -> np.ndarray:
        """(N, ...) per-item values -> each SID's mean over its items (G + 1, ...), the last row
        `unknown`: indexed by `slot_groups`, whose -1 is a SID no item has (a user's price level).
        A table of G rows: for scalar values only (per-SID vectors are gathered on demand, `gather`)."""
        values = np.asarray(values, np.float64)
        counts = np.diff(self.starts)
        sums = np.zeros((len(self.sids), *values.shape[1:]), np.float64)
        np.add.at(sums, np.repeat(np.arange(len(self.sids)), counts), values[self.members])
        means = sums / counts.reshape(-1, *([1] * (sums.ndim - 1)))
        return np.concatenate([means, np.full((1, *means.shape[1:]), unknown)])

    def gather(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M,) group indices (-1: none) -> every item of them, flat: (position in `groups`, item row),
        positions ascending, each group's items in S_conv order. What a few SIDs' items have in
        common (their embedding, their categories) is computed from these, not kept per SID."""
        groups = np.asarray(groups, np.int64).reshape(-1)
        where = np.flatnonzero(groups >= 0)
        g = groups[where]
        n = self.starts[g + 1] - self.starts[g]
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        return np.repeat(where, n), self.members[np.repeat(self.starts[g], n) + offset]

    def expand(self, beam_sids: np.ndarray, live: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(B, beam, L) SIDs -> the items they hold, flat: (row, beam position, item row), in beam
        order and S_conv order inside each SID; SIDs no item has, or not `live` (B, beam), hold none."""
        b, beam = beam_sids.shape[:2]
        groups = self.groups(beam_sids.reshape(-1, beam_sids.shape[-1])).reshape(b, beam)
        if live is not None:
            groups = np.where(live, groups, -1)
        where, items = self.gather(groups)
        return where // beam, where % beam, items

    def rank(self, beam_sids: np.ndarray, k: int = 10, scores: np.ndarray | None = None,
             query_embedding: np.ndarray | None = None, item_embedding: np.ndarray | None = None,
             similarity_weight: float = 0.0) -> np.ndarray:
        """(B, beam, L) SIDs best first -> (B, k) item rows, -1 padded.

        Plain: the SIDs' items in beam order, S_conv order inside each SID. With the beam's
        log-probabilities `scores` (B, beam) and a `similarity_weight`: every item is scored by its
        SID's log-probability + the weight x its own cosine to the photo, so of near duplicates
        sharing a SID the one that looks like the photo comes first, and a SID's weaker items fall
        behind other SIDs' better ones; ties keep the plain order. SIDs scored -inf hold no items."""
        return self.rescore(beam_sids, k, scores, query_embedding, item_embedding, similarity_weight)[0]

    def rescore(self, beam_sids: np.ndarray, k: int = 10, scores: np.ndarray | None = None,
                query_embedding: np.ndarray | None = None, item_embedding: np.ndarray | None = None,
                similarity_weight: float = 0.0,
                item_bonus: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """`rank`'s items, when there is a similarity weight each SID's best cosine to the photo
        (B, beam; -1 where it holds no item), and the score each ranked item was ranked by (B, k;
        -inf padded; 0 in plain order): all from one expansion of the beam. With the similarity
        re-score, `item_bonus(rows, items)` adds to each item's score (e.g. the shopper's price
        affinity, `generator.rank.price_affinity`)."""
        live = None if scores is None else np.isfinite(scores)
        rows, pos, items = self.expand(beam_sids, live)
        key, best = np.zeros(len(items)), None
        if scores is not None:
            key = -scores[rows, pos].astype(np.float64)
            if similarity_weight:
                assert query_embedding is not None and item_embedding is not None, "a similarity weight needs both"
                cos = _cosines(items, rows, query_embedding, item_embedding)
                key -= similarity_weight * cos
                best = _best_per_sid(scores.shape, rows, pos, cos)
                if item_bonus is not None:
                    key -= item_bonus(rows, items)
        ranked, ranked_key = _top_k(rows, items, key, beam_sids.shape[0], k)
        return ranked, best, -ranked_key


def _cosines(items: np.ndarray, rows: np.ndarray, query_embedding: np.ndarray,
             item_embedding: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", item_embedding[items], query_embedding[rows])


def _best_per_sid(shape: tuple[int, int], rows: np.ndarray, pos: np.ndarray, cos: np.ndarray) -> np.ndarray:
    out = np.full(shape, -1.0, np.float32)
    np.maximum.at(out, (rows, pos), cos)
    return out


def _top_k(rows: np.ndarray, items: np.ndarray, key: np.ndarray, b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) items per row by ascending key (ties keep their flat order; -1 padded) and their
    keys (+inf padded)."""
    order = np.lexsort((np.arange(len(items)), key, rows))
    rows, items, key = rows[order], items[order], key[order]
    place = np.arange(len(items)) - np.searchsorted(rows, rows)
    keep = place < k
    out, out_key = np.full((b, k), -1, np.int64), np.full((b, k), np.inf)
    out[rows[keep], place[keep]] = items[keep]
    out_key[rows[keep], place[keep]] = key[keep]
    return out, out_key


def low_confidence(query_embedding: np.ndarray, item_embedding: np.ndarray, ranked: np.ndarray,
                   threshold: float, top_k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(flag, best similarity) per query: flag when the best cosine similarity between the query
    and its top-K items is below `threshold`."""
    top = ranked[:, :top_k]
    sims = np.einsum("bd,bkd->bk", query_embedding, item_embedding[np.maximum(top, 0)])
    best = np.where(top >= 0, sims, -1.0).max(1)
    return best < threshold, best


def calibrate_threshold(query_embedding: np.ndarray, target_embedding: np.ndarray, quantile: float = 0.02) -> float:
    """A threshold that flags about `quantile` of correct matches: the quantile of the cosine
    similarity between training photos and their own items."""
    return float(np.quantile((query_embedding * target_embedding).sum(1), quantile))
