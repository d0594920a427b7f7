"""Similarity look-ahead for the trie-constrained beam search.

The searcher ranks a finished SID by its log-probability + weight x the best cosine between the
photo and the SID's items (`retrieve.SIDItems.rescore`). A plain beam prunes by log-probability
alone, so at a narrow beam (10 offline) the SID holding the photo's product can fall out at a
shallow level before that term is ever seen: a wider beam then finds items a narrow one cannot.

`SimilarityGuide` gives the beam the same term for every prefix: weight x the best cosine
between the photo and any item under it. A prefix's log-probability only falls as codes are
added and a prefix's best cosine only falls as its subtree narrows, so log-probability + this
bonus never under-estimates the final score of any completion (an admissible look-ahead), and
at the last level it is exactly the searcher's SID score. Hypotheses are ranked by it; the
scores the beam returns stay the summed log-probabilities.
"""

from __future__ import annotations

import numpy as np
import torch

from onevision.generator.decode.trie import SIDTrie
from onevision.generator.sid_items import SIDItems


class SimilarityGuide:
    """Per level l (1..L), the best item cosine under every trie node of that level (a prefix of
    l codes), for a batch of photos. The items come grouped by SID (`retrieve.SIDItems`, in the
    trie's SID order); their order inside a SID does not matter here."""

    def __init__(self, trie: SIDTrie, items: SIDItems, item_embedding: np.ndarray):
        if len(items.members) != len(item_embedding):
            raise ValueError(f"{len(items.members)} SIDs but {len(item_embedding)} embeddings")
        if items.sids.shape != trie.sids.shape or (items.sids != trie.sids).any():
            raise ValueError("the guide's items must carry exactly the trie's SIDs")
        self.items, self.trie = items, trie
        self.item_embedding = torch.from_numpy(np.ascontiguousarray(item_embedding, np.float32))

    def bonuses(self, query_embedding: np.ndarray, weight: float) -> list[np.ndarray]:
        """(B, D) photos -> per level l = 1..L, (B, nodes at l + 1): weight x the best cosine under
        each node; the last column, for a missing node (-1), is -inf."""
        # torch's matmul, not numpy's: OpenBLAS's threads spin after a call and slowed the decoder's
        # own matmuls that follow by half (bench/decode.py)
        query = torch.from_numpy(np.ascontiguousarray(query_embedding, np.float32))
        cos = (query @ self.item_embedding.T).numpy()  # (B, N)
        best = np.maximum.reduceat(cos[:, self.items.members], self.items.starts[:-1], axis=1)  # (B, SIDs)
        pad = np.full((len(cos), 1), -np.inf, np.float32)
        return [np.hstack([weight * np.maximum.reduceat(best, starts, axis=1), pad])
                for starts in self.trie.node_starts[1:]]
