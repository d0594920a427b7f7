"""Nearest-neighbour search over V's unit-length embeddings (faiss, inner product = cosine):
the recall behind the prompt's image SIDs, the MCA cascade and the ANN baseline.

`ItemIndex` is what serving holds: built once per catalog version (a served model's items), exact
(`IndexFlatIP`) up to `EXACT_UP_TO` items and HNSW beyond, where an exact search's cost per query
grows with the catalog. `search`/`search_scored` are one-off exact searches (evaluation)."""

from __future__ import annotations

import faiss
import numpy as np

EXACT_UP_TO = 200_000  # items; beyond, HNSW (bench/scale.py measures its recall@10 against exact search)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128


class ItemIndex:
    """A catalog's item embeddings, indexed once."""

    def __init__(self, item_vecs: np.ndarray, exact_up_to: int = EXACT_UP_TO, ef_search: int = HNSW_EF_SEARCH):
        vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
        self.n, d = vecs.shape
        self.ef_search = ef_search
        self.hnsw: faiss.IndexHNSWFlat | None = None
        self.index: faiss.Index
        if self.n <= exact_up_to:
            self.kind, self.index = "exact", faiss.IndexFlatIP(d)
        else:
            self.hnsw = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.kind, self.index = "hnsw", self.hnsw
        self.index.add(vecs)

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """((n_queries, k) cosines, (n_queries, k) item rows), best first."""
        k = min(k, self.n)
        queries = np.ascontiguousarray(query_vecs, dtype=np.float32)
        if self.hnsw is not None:  # HNSW returns at most efSearch hits; per call, so threads never share it
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))  # type: ignore[attr-defined]
            return self.index.search(queries, k, params=params)
        return self.index.search(queries, k)


def search(item_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product search (vectors are unit length, so cosine): (n_queries, k) indices."""
    return search_scored(item_vecs, query_vecs, k)[1]


def search_scored(item_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`search` with its cosines: ((n_queries, k) similarities, (n_queries, k) indices)."""
    return ItemIndex(item_vecs, exact_up_to=len(item_vecs)).search(query_vecs, k)
