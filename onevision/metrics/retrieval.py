"""HitRate@K and MRR@K over ranked lists: the metrics every evaluation in OneVision reports.

A ranked list is a row of item indices, best first (-1 pads a short list). HR@K is the share
of queries whose target is in the first K; MRR@K averages 1/rank of the target within the
first K (0 when it is not there), as in the paper's Tables 1-4. A query may accept several
items (targets (n, m), -1 pads): its rank is that of the first accepted item in its list.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CUTOFFS: tuple[tuple[str, int], ...] = (("HR", 1), ("HR", 4), ("MRR", 4), ("HR", 10), ("MRR", 10))


def padded_targets(lists) -> np.ndarray:
    """Per-query lists of accepted item rows -> the (n, m) targets `target_ranks` reads (-1 pads)."""
    lists = [np.asarray(t, np.int64) for t in lists]
    out = np.full((len(lists), max((len(t) for t in lists), default=1)), -1, np.int64)
    for r, t in enumerate(lists):
        out[r, : len(t)] = t
    return out


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each query's first accepted target in its ranked row, or 0 when absent;
    targets (n,) or (n, m) with -1 padding."""
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2 or len(ranked) != len(targets):
        raise ValueError(f"ranked must be (n_queries, k) and match {len(targets)} targets, got {ranked.shape}")
    if targets.ndim == 1:
        targets = targets[:, None]
    hit = ((ranked[:, :, None] == targets[:, None, :]) & (targets[:, None, :] >= 0)).any(-1)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks)
    return float(np.mean((ranks > 0) & (ranks <= k))) if len(ranks) else float("nan")


def mrr(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks)
    if not len(ranks):
        return float("nan")
    return float(np.mean(np.where((ranks > 0) & (ranks <= k), 1.0 / np.maximum(ranks, 1), 0.0)))


def retrieval_metrics(ranked: np.ndarray, targets: np.ndarray,
                      cutoffs: tuple[tuple[str, int], ...] = DEFAULT_CUTOFFS) -> dict[str, float]:
    """{"HR@1": ..., "HR@4": ..., "MRR@4": ..., ...} for a set of queries."""
    ranks = target_ranks(ranked, targets)
    fns = {"HR": hit_rate, "MRR": mrr}
    return {f"{name}@{k}": fns[name](ranks, k) for name, k in cutoffs}
