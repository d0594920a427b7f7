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
    """Computed for the SIDs asked for, from the items' embeddings (a view of the catalog's one
    copy): a table of every SID's mean would cost as much memory as the catalog's embeddings."""

    def __init__(self, items: SIDItems, item_embedding: np.ndarray):
        self.items, self.embedding = items, np.asarray(item_embedding)  # float16 for a large catalog: not copied
        if len(self.embedding) != len(items.members):
            raise ValueError(f"{len(items.members)} items grouped by SID but {len(self.embedding)} embeddings")

    @classmethod
    def from_item_sids(cls, item_sids: np.ndarray, item_embedding: np.ndarray) -> "SIDContent":
        if len(item_sids) != len(item_embedding):
            raise ValueError(f"{len(item_sids)} SIDs but {len(item_embedding)} embeddings")
        return cls(SIDItems.build(item_sids, np.zeros(len(item_sids))), item_embedding)

    def lookup(self, sids: np.ndarray) -> np.ndarray:
        """(..., L) SIDs -> (..., D) embeddings, each SID's items' summed embedding at unit length;
        rows with a -1 code or not in the catalog get zeros."""
        groups = self.items.slot_groups(sids)
        out = np.zeros((groups.size, self.embedding.shape[1]), np.float32)
        where, members = self.items.gather(groups)
        if len(where):
            first = np.flatnonzero(np.r_[True, where[1:] != where[:-1]])  # each slot's run of items
            sums = np.add.reduceat(self.embedding[members].astype(np.float64), first, axis=0)
            norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
            out[where[first]] = (sums / norms).astype(np.float32)
        return out.reshape(*groups.shape, self.embedding.shape[1])
