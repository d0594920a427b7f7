"""The catalog as the workers see it: item id -> SID (and quantized vector), plus the set of
valid SIDs, so that every SID a worker writes is one that some catalog item has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from onevision.ann import ItemIndex
from onevision.catalog.changes import ItemState

ITEM_SIDS = "item_sids.parquet"


def sid_string(sid: Sequence[int]) -> str:
    """A SID in the feature store's text form: 'c1-c2-...'."""
    return "-".join(map(str, sid))


def parse_sid(sid, levels: int) -> list[int]:
    """A SID as Feast stores it ('3-1-0-7-2' or a list of ints) -> list of `levels` ints."""
    codes = [int(c) for c in (sid.split("-") if isinstance(sid, str) else sid)]
    if len(codes) != levels:
        raise ValueError(f"SID {sid!r} has {len(codes)} codes, expected {levels}")
    return codes


class ItemTableError(ValueError):
    pass


class ItemVectors:
    """Each item's vector (what its codes reconstruct), stored once per distinct vector inside
    their L2 index: items that share a SID share their reconstruction, and an HNSW graph over exact
    duplicates builds slowly and traps its searches."""

    def __init__(self, vectors: np.ndarray, exact_up_to: int | None = None):
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or not len(vecs):
            raise ItemTableError(f"need one vector per item, got shape {vecs.shape}")
        distinct, first, row = np.unique(vecs, axis=0, return_index=True, return_inverse=True)
        self.index = ItemIndex(distinct, exact_up_to=exact_up_to, metric="l2")
        self.first = first  # index row -> the first item with that vector
        self.row = row.reshape(-1)  # item -> index row

    def __len__(self) -> int:
        return len(self.row)

    def __getitem__(self, items) -> np.ndarray:
        return np.asarray(self.index.vectors[self.row[items]], np.float32)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def nearest(self, vectors: np.ndarray) -> np.ndarray:
        """(n,) the item whose vector is nearest each of `vectors` (the first of equals)."""
        _, idx = self.index.search(vectors, 1)
        return self.first[idx[:, 0]]


@dataclass
class ItemTable:
    item_ids: list[str]
    sids: np.ndarray  # (n, L) int64
    vectors: np.ndarray | ItemVectors | None = None  # (n, d): what each item's codes reconstruct
    tokenizer: str | None = None  # the version (`model/vNNNN`) that gave the SIDs, when known
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.sids = np.asarray(self.sids, dtype=np.int64)
        if self.sids.ndim != 2 or len(self.sids) != len(self.item_ids) or not len(self.item_ids):
            raise ItemTableError(f"need one SID row per item, got {self.sids.shape} for {len(self.item_ids)} items")
        self._index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise ItemTableError("item ids repeat in the item table")
        if self.vectors is not None and not isinstance(self.vectors, ItemVectors):
            if len(self.vectors) != len(self.item_ids):
                raise ItemTableError(f"{len(self.vectors)} vectors for {len(self.item_ids)} items")
            self.vectors = ItemVectors(self.vectors)  # indexed once (exact, HNSW for a large catalog)

    @property
    def levels(self) -> int:
        return self.sids.shape[1]

    def index(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    def indices(self, item_ids) -> np.ndarray:
        """Row of each item id (-1 for ids not in the table)."""
        return pd.Series(item_ids, dtype=object).map(self._index).fillna(-1).to_numpy(dtype=np.int64)

    def sid(self, item_id: str) -> list[int]:
        return self.sids[self._index[item_id]].tolist()

    def is_valid(self, sid) -> bool:
        return bool((self.sids == np.asarray(sid)).all(1).any())

    def nearest_sids(self, vectors: np.ndarray) -> np.ndarray:
        """Re-quantize mean vectors to the nearest catalog item's SID (always a valid SID)."""
        if not isinstance(self.vectors, ItemVectors):
            raise ItemTableError("the item table has no vectors; use the 'onesearch' long-term mode")
        return self.sids[self.vectors.nearest(vectors)]

    def with_changes(self, states: Mapping[str, ItemState]) -> tuple["ItemTable", list[str]]:
        """The table after catalog changes (`catalog.changes.fold`'s states): an added item, or one
        with a new photo, takes the SID (and vector) its change carries; a removed item stays, since
        a click or order of it, shown before it went, is still a real event. Returns the table and
        the items whose SID it learned or changed (a state without a SID, or without the vector the
        table keeps, changes nothing here)."""
        changed = {i: st for i, st in states.items() if st.sid is not None and not st.removed
                   and (self.vectors is None or st.vector is not None)
                   and (i not in self._index or self.sids[self._index[i]].tolist() != list(st.sid))}
        if not changed:
            return self, []
        ids, sids = list(self.item_ids), self.sids.copy()
        vecs = None if self.vectors is None else np.array(self.vectors[np.arange(len(ids))], np.float32)
        new_ids = [i for i in changed if i not in self._index]
        rows = [self._index[i] for i in changed if i in self._index]
        if rows:
            sids[rows] = [changed[self.item_ids[r]].sid for r in rows]
            if vecs is not None:
                vecs[rows] = [changed[self.item_ids[r]].vector for r in rows]
        if new_ids:
            ids += new_ids
            sids = np.concatenate([sids, np.asarray([changed[i].sid for i in new_ids], np.int64)])
            if vecs is not None:
                vecs = np.concatenate([vecs, np.asarray([changed[i].vector for i in new_ids], np.float32)])
        return ItemTable(ids, sids, vecs, self.tokenizer), list(changed)

    def snap(self, codes: np.ndarray) -> np.ndarray:
        """The valid SID that follows `codes` level by level: at each level the closest code
        among the children of the prefix chosen so far (so a rounded mean becomes a real SID)."""
        out = np.empty_like(self.sids[: len(codes)])
        for r, want in enumerate(np.asarray(codes)):
            rows = self.sids
            for level in range(self.levels):
                col = rows[:, level]
                best = col[np.argmin(np.abs(col - want[level]))]
                rows = rows[col == best]
            out[r] = rows[0]
        return out


def load_item_table(path: str | Path, vectors: bool = True) -> ItemTable:
    """From a tokenizer version folder (its item_sids.parquet) or a parquet file with item_id,
    sid and optionally vector columns (read only with `vectors`: what re-quantizes users' mean
    vectors; searching needs only ids and SIDs, and skips their index)."""
    path = Path(path)
    if path.is_dir():
        path = path / ITEM_SIDS
    if not path.is_file():
        raise ItemTableError(f"no item SID table at {path} (train a tokenizer first: onevision tokenizer train)")
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    missing = {"item_id", "sid"} - names
    if missing:
        raise ItemTableError(f"{path} lacks column(s) {sorted(missing)}")
    df = pd.read_parquet(path, columns=["item_id", "sid"] + (["vector"] if vectors and "vector" in names else []))
    vecs = np.stack(df["vector"].to_numpy()) if "vector" in df.columns else None
    tokenizer = None
    if (path.parent / "manifest.json").is_file():  # a tokenizer version: catalog changes must come from it
        from onevision.registry import version_name

        tokenizer = version_name(path.parent)
    return ItemTable(df["item_id"].astype(str).tolist(), np.stack(df["sid"].to_numpy()), vecs, tokenizer)


def log1p_known(values) -> np.ndarray:
    """log1p per column of (N,) or (N, C) values, an unknown one (NaN) taking its column's median
    known value (0 when none is known): unknown prices and GMV read as typical, never as free."""
    v = np.log1p(np.asarray(values, np.float64))
    cols = v.reshape(len(v), -1).copy()
    for c in range(cols.shape[1]):
        ok = np.isfinite(cols[:, c])
        cols[~ok, c] = np.median(cols[ok, c]) if ok.any() else 0.0
    return cols.reshape(v.shape)
