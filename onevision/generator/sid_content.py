"""What a SID looks like: the mean V embedding of the catalog items that carry it.

A SID token says which cluster an item falls in, not what the item looks like, and the codes
of two items of the same colour or brand in different categories share nothing. The prompt's
SID slots (long-term, short-term, the photo's hint items) therefore also carry their items' V
embedding, projected like the photo's own (`OneVisionGenerator.embed`): the encoder can then
compare a candidate hint with the photo and with the shopper's recent clicks (colour, brand
mark, shape) directly. Built from the item table, so any SID the feature store holds maps to an
embedding; an unknown or missing SID maps to zeros.
"""

from __future__ import annotations

import numpy as np


class SIDContent:
    def __init__(self, item_sids: np.ndarray, item_embedding: np.ndarray, sizes: tuple[int, ...]):
        item_sids = np.asarray(item_sids, np.int64)
        emb = np.asarray(item_embedding, np.float32)
        if len(item_sids) != len(emb):
            raise ValueError(f"{len(item_sids)} SIDs but {len(emb)} embeddings")
        self.radix = np.cumprod((1,) + tuple(int(s) for s in sizes[::-1]))[:-1][::-1].copy()
        keys = item_sids @ self.radix
        self.keys, inverse = np.unique(keys, return_inverse=True)
        sums = np.zeros((len(self.keys), emb.shape[1]), np.float64)
        np.add.at(sums, inverse.reshape(-1), emb)
        mean = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        self.table = np.vstack([mean.astype(np.float32), np.zeros((1, emb.shape[1]), np.float32)])  # last row: none
        self.dim = emb.shape[1]

    def lookup(self, sids: np.ndarray) -> np.ndarray:
        """(..., L) SIDs -> (..., D) embeddings; rows with a -1 code or not in the catalog get zeros."""
        sids = np.asarray(sids, np.int64)
        keys = np.where((sids < 0).any(-1), -1, np.maximum(sids, 0) @ self.radix)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = (self.keys[pos] == keys) & (keys >= 0)
        return self.table[np.where(found, pos, len(self.keys))]
