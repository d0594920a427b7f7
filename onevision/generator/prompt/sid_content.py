"""What a SID looks like: the mean V embedding of the catalog items that carry it.

A SID token says which cluster an item falls in, not what the item looks like, and the codes
of two items of the same colour or brand in different categories share nothing. The prompt's
SID slots (long-term, short-term, the photo's hint items) therefore also carry their items' V
embedding, projected like the photo's own (`OneVisionGenerator.embed`): the encoder can then
compare a candidate hint with the photo and with the shopper's recent clicks (colour, brand
mark, shape) directly. Built on the items grouped by SID (`retrieve.SIDItems`), so any SID the
feature store holds maps to an embedding; an unknown or missing SID maps to zeros.
"""

from __future__ import annotations

import numpy as np

from onevision.generator.sid_items import SIDItems


class SIDContent:
    def __init__(self, items: SIDItems, item_embedding: np.ndarray):
        emb = np.asarray(item_embedding, np.float32)
        self.items = items
        sums, _ = items.group_sums(emb)
        mean = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        self.table = np.vstack([mean.astype(np.float32), np.zeros((1, emb.shape[1]), np.float32)])  # row -1: none

    @classmethod
    def from_item_sids(cls, item_sids: np.ndarray, item_embedding: np.ndarray) -> "SIDContent":
        if len(item_sids) != len(item_embedding):
            raise ValueError(f"{len(item_sids)} SIDs but {len(item_embedding)} embeddings")
        return cls(SIDItems.build(item_sids, np.zeros(len(item_sids))), item_embedding)

    def lookup(self, sids: np.ndarray) -> np.ndarray:
        """(..., L) SIDs -> (..., D) embeddings; rows with a -1 code or not in the catalog get zeros."""
        return self.table[self.items.slot_groups(sids)]
