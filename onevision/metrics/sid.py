"""Quality metrics of semantic IDs, all in one place (OneVision 3.1.2 and Table 4; OneSearch 3.1).

SIDs are an (N, L) integer array, one row per item, level 1 first.

- ICO (Independent Code Occupancy): mean items per distinct full SID; lower = more unique.
- ICR (Independent Coding Rate): share of items whose full SID no other item has.
- CUR: per level, the share of codes used (`usage@l`) and the share of possible prefixes of
  length l that occur (`cur@l`, OneSearch's CUR_L1, CUR_L1*L2, ..., CUR_total).
- entropy@l: entropy of the level-l code distribution, in bits and normalised by log2 K_l.
- view consistency@l: share of an item's non-catalog views whose first l codes equal the item's.
- category purity: items-weighted share of the majority category within each level-1 code.
- QAS (Quantized ANN Score): HR@4 and MRR@4 of ANN retrieval between quantized query
  embeddings and quantized item embeddings (computed by the caller with `quantized_ann_score`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onevision.metrics.retrieval import hit_rate, mrr, target_ranks


def _rows(sids: np.ndarray) -> np.ndarray:
    sids = np.ascontiguousarray(np.asarray(sids, dtype=np.int64))
    if sids.ndim != 2:
        raise ValueError(f"SIDs must be (n_items, levels), got shape {sids.shape}")
    return sids


def ico(sids: np.ndarray) -> float:
    sids = _rows(sids)
    return len(sids) / len(np.unique(sids, axis=0))


def icr(sids: np.ndarray) -> float:
    sids = _rows(sids)
    _, inverse, counts = np.unique(sids, axis=0, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse.reshape(-1)] == 1))


def code_usage(sids: np.ndarray, sizes: Sequence[int]) -> list[float]:
    """Per level: distinct codes used / codebook size."""
    sids = _rows(sids)
    return [len(np.unique(sids[:, level])) / k for level, k in enumerate(sizes)]


def prefix_cur(sids: np.ndarray, sizes: Sequence[int]) -> list[float]:
    """Per level l: distinct prefixes of length l / number of possible prefixes (prod K_1..K_l)."""
    sids = _rows(sids)
    out, capacity = [], 1.0
    for level, k in enumerate(sizes):
        capacity *= k
        out.append(len(np.unique(sids[:, : level + 1], axis=0)) / capacity)
    return out


def level_entropy(sids: np.ndarray, sizes: Sequence[int]) -> list[dict[str, float]]:
    sids = _rows(sids)
    out = []
    for level, k in enumerate(sizes):
        p = np.bincount(sids[:, level], minlength=k) / len(sids)
        p = p[p > 0]
        h = float(-(p * np.log2(p)).sum())
        out.append({"bits": h, "normalised": h / np.log2(k) if k > 1 else 1.0})
    return out


def view_consistency(item_sids: np.ndarray, view_sids: np.ndarray, view_item: np.ndarray) -> list[float]:
    """Per depth l: share of views whose first l codes equal those of the item they show."""
    item_sids, view_sids = _rows(item_sids), _rows(view_sids)
    same = view_sids == item_sids[np.asarray(view_item)]
    return [float(np.mean(same[:, : level + 1].all(axis=1))) for level in range(item_sids.shape[1])]


def category_purity(level1: np.ndarray, categories: Sequence[str]) -> float:
    """Items-weighted share of the majority category inside each level-1 code."""
    level1 = np.asarray(level1)
    cats = np.unique(np.asarray(categories), return_inverse=True)[1].reshape(-1)
    total = 0
    for code in np.unique(level1):
        total += np.bincount(cats[level1 == code]).max()
    return total / len(level1)


def quantized_ann_score(item_vecs: np.ndarray, query_vecs: np.ndarray, targets: np.ndarray,
                        k: int = 4) -> dict[str, float]:
    """QAS: HR@k and MRR@k of exact L2 search of quantized queries among quantized items."""
    import faiss

    index = faiss.IndexFlatL2(item_vecs.shape[1])
    index.add(np.ascontiguousarray(item_vecs, dtype=np.float32))
    _, ranked = index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), min(k, len(item_vecs)))
    ranks = target_ranks(ranked, np.asarray(targets))
    return {f"HR@{k}": hit_rate(ranks, k), f"MRR@{k}": mrr(ranks, k)}


def sid_report(item_sids: np.ndarray, sizes: Sequence[int], categories: Sequence[str],
               view_sids: np.ndarray | None = None, view_item: np.ndarray | None = None) -> dict:
    """Every code-level metric of a set of item SIDs (QAS is added by the caller)."""
    report = {
        "n_items": int(len(item_sids)), "sizes": list(map(int, sizes)),
        "ICO": ico(item_sids), "ICR": icr(item_sids),
        "usage": code_usage(item_sids, sizes), "CUR": prefix_cur(item_sids, sizes),
        "entropy": level_entropy(item_sids, sizes),
        "category_purity_l1": category_purity(_rows(item_sids)[:, 0], categories),
    }
    if view_sids is not None and view_item is not None and len(view_sids):
        report["view_consistency"] = view_consistency(item_sids, view_sids, view_item)
    return report
