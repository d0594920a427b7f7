"""Offline scores of a generator: constrained beam search over shopper photos, SIDs expanded to
items by S_conv, HR@1/4/10 and MRR@4/10 per query set (click, order, all).

When the catalog carries point-in-time item stats (`Catalog.stats`), each query's items are
ordered by the S_conv known at its time: queries are searched in groups sharing a snapshot."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onevision.generator.rank.price_affinity import relative_price
from onevision.generator.rank.searcher import GenerativeSearcher, SearchCatalog, SearchConfig
from onevision.generator.sid_items import SIDItems, calibrate_threshold, s_conv, s_conv_of
from onevision.metrics.retrieval import retrieval_metrics

QUERY_SETS = ("click", "order", "all")


def catalog_embedding(data) -> np.ndarray:
    """V's float32 embeddings of the catalog's items (row i = item i) from the image bank of
    `data` (onevision.generator.data.GeneratorData): what a version publishes."""
    return data.bank.tokens.embedding[data.bank.rows(data.catalog.items["image"])]


def searcher_for(model, data, **options) -> GenerativeSearcher:
    """A searcher over the catalog of `data` (onevision.generator.data.GeneratorData), its
    confidence threshold calibrated on the training photos; `options` are `SearchConfig` fields."""
    emb = data.bank.tokens.embedding
    item_emb = catalog_embedding(data)
    train = data.queries("train")
    threshold = calibrate_threshold(emb[data.bank.rows(train["image"])],
                                    item_emb[data.table.indices(train["target_item_id"])]) if len(train) else 0.0
    catalog = SearchCatalog(data.table.sids, s_conv(data.catalog.items), item_emb, relative_price(data.catalog.items),
                            data.item_category)
    return GenerativeSearcher(model, catalog, replace(SearchConfig(threshold=threshold), **options))


def set_metrics(ranked: np.ndarray, targets: np.ndarray, kinds: np.ndarray) -> dict:
    out = {}
    for name in QUERY_SETS:
        mask = np.ones(len(kinds), bool) if name == "all" else kinds == name
        out[name] = {"n": int(mask.sum()), **(retrieval_metrics(ranked[mask], targets[mask]) if mask.any() else {})}
    return out


def without_user(examples):
    """A copy of `examples` with the user slots blanked: the w/o P. rows, and a cold-start user."""
    ex = examples.take(slice(None))
    ex.long_sid = np.full_like(ex.long_sid, -1)
    ex.short_sids = np.full_like(ex.short_sids, -1)
    ex.recent_sids = np.full_like(ex.recent_sids, -1)
    return ex


def evaluate_generator(model, data, examples, kinds, beam: int = 10, personalized: bool = True,
                       searcher: GenerativeSearcher | None = None) -> dict:
    """Scores of `model` on `examples` (with their user features, or blanked when not
    `personalized`); a given `searcher` (its trie and item tables built once) searches with `model`."""
    ex = examples if personalized else without_user(examples)
    if searcher is None:
        searcher = searcher_for(model, data)
    searcher.model = model
    items, sids, scores, low = search_as_of(searcher, data, ex, beam)
    valid = searcher.trie.contains(sids.reshape(-1, sids.shape[-1])).reshape(sids.shape[:2])
    finite = np.isfinite(scores)
    return {"sets": set_metrics(items, ex.targets, np.asarray(kinds)), "ranked": items,
            "all_sids_valid": bool(valid[finite].all()), "low_confidence_share": float(low.mean()) if len(low) else 0.0}


def search_as_of(searcher: GenerativeSearcher, data, ex, beam: int, k: int = 10) -> tuple[np.ndarray, ...]:
    """(items, sids, scores, low_confidence) of `ex`, each query's items inside a SID ordered by the
    S_conv known at its time when the catalog has point-in-time stats (else the searcher's own)."""
    stats = getattr(data.catalog, "stats", None)
    if stats is None or ex.ts is None or len(ex) == 0:
        res = searcher.search(ex.prompts(data.tokens, data.bank), beam=beam, k=k)
        return res.items, res.sids, res.scores, res.low_confidence

    def search(rows: np.ndarray, snapshot: np.ndarray) -> tuple[np.ndarray, ...]:
        searcher.items = SIDItems.build(searcher.item_sids, s_conv_of(snapshot))
        res = searcher.search(ex.prompts(data.tokens, data.bank, rows), beam=beam, k=k)
        return res.items, res.sids, res.scores, res.low_confidence

    own = searcher.items
    try:
        return stats.per_snapshot(ex.ts, search)
    finally:
        searcher.items = own
