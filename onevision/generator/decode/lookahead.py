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
    l codes), for a batch of photos, as tensors on the trie's device. The items come grouped by
    SID (`retrieve.SIDItems`, in the trie's SID order); their order inside a SID does not matter here."""

    def __init__(self, trie: SIDTrie, items: SIDItems, item_embedding: np.ndarray):
        if len(items.members) != len(item_embedding):
            raise ValueError(f"{len(items.members)} SIDs but {len(item_embedding)} embeddings")
        if items.sids.shape != trie.sids.shape or (items.sids != trie.sids).any():
            raise ValueError("the guide's items must carry exactly the trie's SIDs")
        self.items, self.trie = items, trie
        self._copies: dict[torch.device, SimilarityGuide] = {trie.device: self}
        device = trie.device
        # the catalog's embeddings in SID order, and the SID each of them belongs to
        self.member_embedding = torch.from_numpy(np.ascontiguousarray(item_embedding[items.members],
                                                                      np.float32)).to(device)
        self.member_sid = torch.repeat_interleave(torch.arange(len(items.sids)),
                                                  torch.from_numpy(np.diff(items.starts))).to(device)

    def to(self, trie: SIDTrie) -> "SimilarityGuide":
        """The same guide for `trie`, this trie on another device (made once per device, then kept:
        the searcher asks for it on every search)."""
        if trie.device not in self._copies:
            other = object.__new__(SimilarityGuide)
            other.items, other.trie, other._copies = self.items, trie, self._copies
            other.member_embedding, other.member_sid = self.member_embedding.to(trie.device), \
                self.member_sid.to(trie.device)
            self._copies[trie.device] = other
        return self._copies[trie.device]

    def bonuses(self, query_embedding, weight: float) -> list[torch.Tensor]:
        """(B, D) photos -> per level l = 1..L, (B, nodes at l + 1): weight x the best cosine under
        each node; the last column, for a missing node (-1), is -inf."""
        query = torch.as_tensor(np.ascontiguousarray(query_embedding, np.float32)) \
            if not torch.is_tensor(query_embedding) else query_embedding.float()
        cos = query.to(self.trie.device) @ self.member_embedding.T  # (B, N) in SID order
        best = self._max_into(cos, self.member_sid, len(self.items.sids))  # (B, SIDs)
        pad = torch.full((len(cos), 1), float("-inf"), device=cos.device)
        return [torch.cat([weight * self._max_into(best, nodes, self.trie.n_nodes[level]), pad], dim=1)
                for level, nodes in enumerate(self.trie.sid_nodes, start=1)]

    @staticmethod
    def _max_into(values: torch.Tensor, groups: torch.Tensor, n: int) -> torch.Tensor:
        """(B, M) values -> (B, n): the max over the columns of each group (-inf where none)."""
        out = torch.full((len(values), n), float("-inf"), dtype=values.dtype, device=values.device)
        return out.scatter_reduce(1, groups.expand(len(values), -1), values, "amax", include_self=True)
