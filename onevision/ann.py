"""Nearest-neighbour search over V's unit-length embeddings (faiss, inner product = cosine):
the recall behind the prompt's image SIDs, the MCA cascade, the beam's similarity look-ahead and
the ANN baseline.

`ItemIndex` is what serving holds: built once per catalog version (a served model's items), exact
(`IndexFlat`) up to `EXACT_UP_TO` items and HNSW beyond, where an exact search's cost per query
grows with the catalog (`bench/scale.py`: at 100k items two exact searches were a third of a
batch's search time). Its stored vectors are the catalog's only copy of the embeddings
(`vectors`, a read-only view), so an index does not double a replica's memory; beyond the exact
size they are stored as float16 (half the memory; a unit vector's components within about 1e-4).
`search`/`search_scored` are one-off exact searches (evaluation)."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

EXACT_UP_TO = 20_000  # items; beyond, HNSW (bench/scale.py measures its recall@10 against exact search)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


class _Stored(np.ndarray):
    """A numpy view of memory an index owns; it holds the index, so the memory outlives every view."""

    owner: object = None

    def __array_finalize__(self, obj) -> None:
        self.owner = getattr(obj, "owner", None)


class ItemIndex:
    """A catalog's item embeddings, indexed once; by inner product (V's unit embeddings: cosine),
    or by L2 distance (`metric="l2"`: vectors of any length, e.g. what SIDs reconstruct)."""

    def __init__(self, item_vecs: np.ndarray, exact_up_to: int | None = None, ef_search: int = HNSW_EF_SEARCH,
                 metric: str = "ip"):
        exact_up_to = EXACT_UP_TO if exact_up_to is None else exact_up_to
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
        vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
        if vecs.ndim != 2 or not len(vecs):
            raise ValueError(f"need a non-empty (items, dims) matrix, got shape {vecs.shape}")
        self.n, self.dim = vecs.shape
        self.ef_search = ef_search
        self.hnsw: faiss.IndexHNSWSQ | None = None
        self.index: faiss.Index
        if self.n <= exact_up_to:
            flat = faiss.IndexFlat(self.dim, METRICS[metric])
            self.kind, self.index = "exact", flat
            flat.add(vecs)
            raw = faiss.rev_swig_ptr(flat.get_xb(), self.n * self.dim)
        else:  # float16 codes, one row per item
            self.hnsw = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16,  # type: ignore[arg-type]
                                          HNSW_M, METRICS[metric])  # (the stubs want a quantizer, not its type)
            self.hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.kind, self.index = "hnsw", self.hnsw
            self.hnsw.add(vecs)
            codes = faiss.downcast_index(self.hnsw.storage).codes  # type: ignore[attr-defined]  # a ScalarQuantizer's
            raw = faiss.rev_swig_ptr(codes.data(), 2 * self.n * self.dim).view(np.float16)
        view = raw.reshape(self.n, self.dim).view(_Stored)
        view.owner = self.index
        view.flags.writeable = False
        self.vectors: np.ndarray = view  # (n, dims) the stored embeddings, row i = item i (float32 or float16)

    @classmethod
    def of(cls, items: "np.ndarray | ItemIndex") -> "ItemIndex":
        """`items` if it already is an index, else one built over these embeddings."""
        return items if isinstance(items, ItemIndex) else cls(items)

    def search(self, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """((n_queries, k) cosines (squared distances for l2), (n_queries, k) item rows), best first."""
        k = min(k, self.n)
        queries = np.ascontiguousarray(query_vecs, dtype=np.float32)
        if self.hnsw is not None:  # HNSW returns at most efSearch hits; per call, so threads never share it
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))  # type: ignore[attr-defined]
            return self.index.search(queries, k, params=params)
        return self.index.search(queries, k)

    @property
    def nbytes(self) -> int:
        """The index's memory: its vectors and, for HNSW, its graph's links."""
        if self.hnsw is None:
            return self.vectors.nbytes
        graph: Any = self.hnsw.hnsw  # SWIG vectors faiss's stubs do not name
        return self.vectors.nbytes + 4 * graph.neighbors.size() + 8 * graph.offsets.size() + 4 * graph.levels.size()


def search(item_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product search (vectors are unit length, so cosine): (n_queries, k) indices."""
    return search_scored(item_vecs, query_vecs, k)[1]


def search_scored(item_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`search` with its cosines: ((n_queries, k) similarities, (n_queries, k) indices)."""
    return ItemIndex(item_vecs, exact_up_to=len(item_vecs)).search(query_vecs, k)
