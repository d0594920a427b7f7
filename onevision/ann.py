"""Nearest-neighbour search over V's unit-length embeddings (faiss, exact inner product = cosine):
the recall behind the prompt's image SIDs, the MCA cascade and the ANN baseline."""

from __future__ import annotations

import faiss
import numpy as np


def search(item_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product search (vectors are unit length, so cosine): (n_queries, k) indices."""
    return search_scored(item_vecs, query_vecs, k)[1]


def search_scored(item_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`search` with its cosines: ((n_queries, k) similarities, (n_queries, k) indices)."""
    index = faiss.IndexFlatIP(item_vecs.shape[1])
    index.add(np.ascontiguousarray(item_vecs, dtype=np.float32))
    return index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), min(k, len(item_vecs)))
