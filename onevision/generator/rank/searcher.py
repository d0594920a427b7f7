"""Image search with a trained generator: prompts in, ranked items and a confidence flag out.

Constrained beam search over the catalog's SID trie, its hypotheses ranked with a look-ahead of
the same similarity term (`decode.lookahead.SimilarityGuide`, `lookahead`), so a narrow beam keeps the
SIDs that hold items like the photo; the SIDs' items ranked by their SID's log-prob +
similarity_weight x their own cosine to the photo - price_weight x their distance from the price level
of the shopper's short-term SIDs (`price_affinity`; given the catalog's prices) + category_weight x
how much the shopper's recent clicks and orders favour their category (`category_affinity`; given
the catalog's categories) + the bonus of their title's words that recent purchases taught
(`title_lift`; given a version that has one) (S_conv breaks ties,
and orders everything when the similarity weight is 0: SIDs in beam order, items by S_conv inside
each); the low-confidence check against V's
embeddings. Batches of any size; a prompt with empty user slots (cold start) is searched like any
other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from onevision.ann import ItemIndex
from onevision.generator.decode.beam import generate_sids
from onevision.generator.decode.lookahead import NEIGHBOURS, SimilarityGuide
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.model import OneVisionGenerator
from onevision.generator.prompt.builder import Prompts
from onevision.generator.rank.category_affinity import CATEGORY_WEIGHT, CategoryAffinity
from onevision.generator.rank.price_affinity import PRICE_WEIGHT, PriceAffinity
from onevision.generator.sid_items import SIDItems, low_confidence


@dataclass
class SearchResult:
    items: np.ndarray  # (B, k) item rows best first, -1 padded
    sids: np.ndarray  # (B, beam, L) generated SIDs
    scores: np.ndarray  # (B, beam) log-probabilities
    rescored: np.ndarray  # (B, beam) the scores that ordered the SIDs (log-prob + weight x their best
                          # item's similarity)
    low_confidence: np.ndarray  # (B,) bool
    similarity: np.ndarray  # (B,) best query-item cosine among the top K
    item_scores: np.ndarray  # (B, k) the score that ranked each item (-inf padded)


# Chosen on the small world's val split: per SID at beam 10, HR@4 click/order 78.2/82.1 -> 80.5/83.2;
# per item at beam 256, weights 40/80/120 give 82.2/83.6/83.2 click HR@4 (order 83.9 each).
SIMILARITY_WEIGHT = 80.0


@dataclass(frozen=True)
class SearchConfig:
    """How the searcher ranks: the weights of its score's terms, the look-ahead (and how many of
    the photo's nearest items it is exact for), the confidence threshold (a calibrated cosine) and
    the batch size of one beam search."""

    similarity_weight: float = SIMILARITY_WEIGHT  # 0: SIDs in beam order, items by S_conv inside each
    price_weight: float = PRICE_WEIGHT
    category_weight: float = CATEGORY_WEIGHT
    lookahead: bool = True
    lookahead_neighbours: int = NEIGHBOURS
    threshold: float = 0.0
    batch_size: int = 64


@dataclass(frozen=True)
class SearchCatalog:
    """The catalog as the searcher reads it, row i = item i: SIDs (N, L), S_conv (N,), V's
    embeddings (N, D; or their `ann.ItemIndex`, which then holds the only copy) and, for the
    personalization terms, relative prices and category indices; `lift`: each item's bonus from
    what sells now (`title_lift.TitleLift.item_bonus`), in score units."""

    sids: np.ndarray
    s_conv: np.ndarray
    embedding: np.ndarray | ItemIndex
    relative_price: np.ndarray | None = None
    category: np.ndarray | None = None
    lift: np.ndarray | None = None


class GenerativeSearcher:
    def __init__(self, model: OneVisionGenerator, catalog: SearchCatalog, config: SearchConfig = SearchConfig()):
        self.model, self.config = model.eval(), config
        self.item_sids = np.asarray(catalog.sids, np.int64)  # (N, L) each item's SID
        # (N,) the catalog's S_conv; `items` may follow live values (ImageSearch.use_s_conv)
        self.s_conv = np.asarray(catalog.s_conv, np.float64)
        self.items = SIDItems.build(catalog.sids, catalog.s_conv)
        self.trie = SIDTrie(self.items.sids, model.vocab.sizes)  # the distinct SIDs, shared
        # the items' ANN index, built once; its stored vectors are the searcher's embeddings (N, D)
        self.index = ItemIndex.of(catalog.embedding)
        self.item_embedding = self.index.vectors
        # the beam ranks prefixes by log-prob + weight x their best item's cosine (none in pure beam order)
        self.guide = SimilarityGuide(self.trie, self.items, self.index, config.lookahead_neighbours) \
            if config.lookahead else None
        # the shopper's price level from their short-term SIDs (price_affinity); none without prices or weight
        self.price = PriceAffinity(self.items, catalog.relative_price, config.price_weight) \
            if catalog.relative_price is not None and config.price_weight else None
        # the categories the shopper's recent clicks and orders favour (category_affinity); none without
        # categories or weight
        self.category = CategoryAffinity(self.items, catalog.category, config.category_weight) \
            if catalog.category is not None and config.category_weight else None
        # (N,) what recent purchases say sells now (title_lift); none without a learned lift or with all zero
        self.lift = np.asarray(catalog.lift, np.float64) \
            if catalog.lift is not None and np.any(catalog.lift) else None
        if self.lift is not None and len(self.lift) != len(self.item_sids):
            raise ValueError(f"{len(self.item_sids)} items but {len(self.lift)} lift bonuses")

    @property
    def threshold(self) -> float:
        """The calibrated cosine under which an answer is flagged low-confidence."""
        return self.config.threshold

    def search(self, prompts: Prompts, beam: int = 10, k: int = 10, constrained: bool = True) -> SearchResult:
        parts = []
        query = prompts.embedding.cpu().numpy()  # the items are ranked on the host, after the beam
        trie = self.trie.to(self.model.device)  # the beam and its look-ahead run on the model's device
        guide_on = self.guide.to(trie) if self.guide is not None and self.config.similarity_weight and constrained \
            else None
        for start in range(0, len(prompts), self.config.batch_size):
            batch = prompts[start:start + self.config.batch_size].to(self.model.device)
            guide = guide_on.bonuses(batch.embedding, self.config.similarity_weight) if guide_on is not None else None
            parts.append(generate_sids(self.model, batch, trie, beam=beam, constrained=constrained, guide=guide))
        sids = np.concatenate([p.sids for p in parts])
        scores = np.concatenate([p.scores for p in parts])
        # items ranked by their own similarity; SIDs re-ordered by their best item's (one expansion)
        terms = []
        if self.price is not None:
            terms.append(partial(self.price.bonus, self.price.level(prompts.short_sids)))
        if self.category is not None:
            terms.append(partial(self.category.bonus, self.category.lift(prompts.recent_sids.cpu().numpy())))
        if self.lift is not None:
            terms.append(partial(_item_term, self.lift))
        bonus: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        if terms:
            def bonus(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
                return sum(term(rows, items) for term in terms)  # type: ignore[return-value]  # >= 1 term
        items, sid_best, item_scores = self.items.rescore(sids, k, scores, query, self.item_embedding,
                                                          self.config.similarity_weight, bonus)
        rescored = scores
        if sid_best is not None:
            rescored = scores + self.config.similarity_weight * sid_best
            order = np.argsort(-rescored, axis=1, kind="stable")  # -inf (padding) stays last
            sids, scores, rescored = (np.take_along_axis(a, order[..., None] if a.ndim == 3 else order, 1)
                                      for a in (sids, scores, rescored))
        flag, best = low_confidence(query, self.item_embedding, items, self.config.threshold)
        return SearchResult(items, sids, scores, rescored, flag, best, item_scores)


def _item_term(values: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A term that depends on the candidate alone."""
    return values[items]
