"""The items a search model serves, row i = item i: their catalog columns, SIDs and V embeddings,
and how a batch of catalog changes (`catalog.changes`) turns one such set into the next.

A model is trained on one catalog version; the shop keeps changing after it. Serving keeps the
model and swaps the items under it: everything derived from the items (trie, SID groups, the ANN
index, S_conv, prices, categories) is rebuilt from a new `ServedItems` and swapped in as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from onevision.ann import ItemIndex
from onevision.catalog.changes import ItemState

COLUMNS = ("item_id", "title", "category", "price", "clicks_30d", "orders_30d", "gmv_30d")
STATS = ("clicks_30d", "orders_30d", "gmv_30d")


@dataclass(frozen=True)
class ServedItems:
    frame: pd.DataFrame  # COLUMNS, a RangeIndex; a new item's stats are 0 (no history yet)
    sids: np.ndarray  # (N, L) int64
    embedding: np.ndarray | ItemIndex  # (N, D): V's embedding of each item's catalog photo (may be a float16 index
                                       # view), or an index holding them (a searcher built over it shares it)
    applied: int = 0  # catalog changes applied since the model's own catalog
    added: frozenset[str] = field(default_factory=frozenset)  # items not in the model's own catalog

    @classmethod
    def of(cls, items: pd.DataFrame, sids: np.ndarray, embedding: np.ndarray | ItemIndex) -> "ServedItems":
        """From catalog rows (any extra columns dropped, missing ones at their defaults)."""
        frame = pd.DataFrame({c: items[c].to_numpy() if c in items.columns else
                              (np.full(len(items), np.nan) if c == "price" else np.zeros(len(items)))
                              for c in COLUMNS})
        frame["price"] = frame["price"].astype(np.float64)
        n_emb = embedding.n if isinstance(embedding, ItemIndex) else len(embedding)
        if len(frame) != len(sids) or len(frame) != n_emb:
            raise ValueError(f"{len(frame)} items, {len(sids)} SIDs and {n_emb} embeddings")
        return cls(frame, np.asarray(sids, np.int64), embedding)

    @cached_property
    def item_ids(self) -> list[str]:
        return self.frame["item_id"].tolist()

    def __len__(self) -> int:
        return len(self.frame)

    def apply(self, states: Mapping[str, ItemState]) -> tuple["ServedItems", dict[str, list[str]]]:
        """The items after these folded changes, and what happened to each changed id: added,
        updated, removed, or skipped (an update of an item this set never had, with no photo to add
        it from; a removal of one it does not hold)."""
        report: dict[str, list[str]] = {"added": [], "updated": [], "removed": [], "skipped": []}
        row_of = {item: r for r, item in enumerate(self.frame["item_id"])}
        keep = np.ones(len(self.frame), bool)
        frame = self.frame.copy()
        new_photo: dict[int, ItemState] = {}  # row -> the state whose photo replaces the row's
        added: list[ItemState] = []
        for item, s in states.items():
            r = row_of.get(item)
            if s.removed:
                if r is None:
                    report["skipped"].append(item)
                else:
                    keep[r] = False
                    report["removed"].append(item)
            elif r is None:
                if s.sid is None or s.embedding is None or s.title is None or s.category is None:
                    report["skipped"].append(item)
                else:
                    added.append(s)
                    report["added"].append(item)
            else:
                for f in ("title", "category"):
                    if getattr(s, f) is not None:
                        frame.at[r, f] = getattr(s, f)
                if s.price_set:
                    frame.at[r, "price"] = s.price if s.price is not None else np.nan
                if s.sid is not None and s.embedding is not None:
                    new_photo[r] = s
                report["updated"].append(item)
        sids, emb = self.sids, self.vectors
        if new_photo:
            rows = list(new_photo)
            sids, emb = sids.copy(), np.array(emb, np.float32)
            sids[rows] = _like([new_photo[r].sid for r in rows], self.sids, "SIDs")
            emb[rows] = _like([new_photo[r].embedding for r in rows], self.vectors, "embeddings")
        frame, sids, emb = frame[keep], sids[keep], np.asarray(emb)[keep]
        if added:
            launched = [{"item_id": s.item_id, "title": s.title, "category": s.category,
                         "price": s.price if s.price is not None else np.nan, **{c: 0.0 for c in STATS}}
                        for s in added]
            frame = pd.concat([frame, pd.DataFrame(launched, columns=list(COLUMNS))], ignore_index=True)
            sids = np.concatenate([sids, _like([s.sid for s in added], self.sids, "SIDs")])
            emb = np.concatenate([np.asarray(emb, np.float32),
                                  _like([s.embedding for s in added], self.vectors, "embeddings")])
        frame = frame.reset_index(drop=True)
        frame["price"] = frame["price"].astype(np.float64)
        now_added = (self.added - set(report["removed"])) | set(report["added"])
        changed = sum(len(v) for k, v in report.items() if k != "skipped")
        return ServedItems(frame, sids, emb, self.applied + changed, frozenset(now_added)), report

    @property
    def vectors(self) -> np.ndarray:
        """The embeddings as an array (an index's stored view)."""
        return self.embedding.vectors if isinstance(self.embedding, ItemIndex) else self.embedding


def _like(rows: list, served: np.ndarray, what: str) -> np.ndarray:
    """New rows of SIDs or embeddings, as wide as the served ones (int64 SIDs, float32 embeddings)."""
    arr = np.asarray(rows, np.int64 if what == "SIDs" else np.float32)
    if arr.ndim != 2 or arr.shape[1] != served.shape[1]:
        raise ValueError(f"new {what} have width {arr.shape[-1]}, the served ones {served.shape[1]}")
    return arr
