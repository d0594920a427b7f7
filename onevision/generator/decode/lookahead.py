"""Similarity look-ahead for the trie-constrained beam search.

The searcher ranks a finished SID by its log-probability + weight x the best cosine between the
photo and the SID's items (`sid_items.SIDItems.rescore`). A plain beam prunes by log-probability
alone, so at a narrow beam (10 offline) the SID holding the photo's product can fall out at a
shallow level before that term is ever seen: a wider beam then finds items a narrow one cannot.

`SimilarityGuide` gives the beam the same term for every prefix: weight x the best cosine
between the photo and any item under it. A prefix's log-probability only falls as codes are
added and a prefix's best cosine only falls as its subtree narrows, so log-probability + this
bonus never under-estimates the final score of any completion (an admissible look-ahead), and
at the last level it is exactly the searcher's SID score. Hypotheses are ranked by it; the
scores the beam returns stay the summed log-probabilities.

The bonuses come from the photo's `neighbours` nearest items in the catalog's `ann.ItemIndex`,
not from every item, so a query's cost does not grow with the catalog: a prefix holding one of
them gets its exact best cosine (every other item under it is farther than the K-th neighbour);
any other prefix gets the K-th neighbour's cosine, a bound its items cannot beat, so the
look-ahead stays admissible (exactly so with an exact index; HNSW may miss a neighbour). With K at
least the catalog's size every prefix's bonus is exact. Nothing of size (photos x trie nodes) is
made: `Bonuses.at` places each neighbour's bonus on the one candidate it extends, if the beam
holds its parent (the K hits are sorted into the beam's W prefixes: K log W per query and level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from onevision.ann import ItemIndex
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.sid_items import SIDItems

NEIGHBOURS = 256  # the photo's nearest items the bonuses are exact for (`bench/affinity_weights.py --term neighbours`)


@dataclass
class Bonuses:
    """The look-ahead of B photos: for each of their K nearest items, at every level l (0..L-1),
    the prefix of l codes it extends (`parent`, (L, B, K)) and the code it extends it by (`code`),
    with weight x its cosine (`value`, (B, K), -inf for a hit the index did not fill); every
    prefix without one of them scores `floor` (B,)."""

    sizes: tuple[int, ...]
    parent: torch.Tensor
    code: torch.Tensor
    value: torch.Tensor
    floor: torch.Tensor

    def to(self, device: torch.device) -> "Bonuses":
        if self.value.device == device:
            return self
        return Bonuses(self.sizes, self.parent.to(device), self.code.to(device), self.value.to(device),
                       self.floor.to(device))

    def at(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """(B, W) the beam's prefixes of `level` codes (trie node ids, all distinct within a row; -1
        for none) -> (B, W x K_level) the bonus of every one-code extension, laid out as the beam
        lays out its candidates (prefix w, code c at w x K_level + c). Extensions the trie lacks
        get the floor; the trie's mask has already made them -inf."""
        b, w = nodes.shape
        k = self.sizes[level]
        ordered, order = nodes.sort(dim=1)
        parent = self.parent[level]
        pos = torch.searchsorted(ordered, parent).clamp(max=w - 1)
        found = ordered.gather(1, pos) == parent
        slot = torch.where(found, order.gather(1, pos) * k + self.code[level], 0)
        value = torch.where(found, self.value, float("-inf"))
        out = self.floor[:, None].expand(b, w * k).contiguous()
        return out.scatter_reduce_(1, slot, value, "amax", include_self=True)


class SimilarityGuide:
    """The catalog's items as the look-ahead reads them: their index, and each item's SID in the
    trie (whose codes and per-level nodes locate the item's prefixes), on the trie's device. The
    items come grouped by SID (`sid_items.SIDItems`, in the trie's SID order)."""

    def __init__(self, trie: SIDTrie, items: SIDItems, index: ItemIndex | np.ndarray, neighbours: int = NEIGHBOURS):
        index = ItemIndex.of(index)
        if len(items.members) != index.n:
            raise ValueError(f"{len(items.members)} items grouped by SID but {index.n} in the index")
        if items.sids.shape != trie.sids.shape or (items.sids != trie.sids).any():
            raise ValueError("the guide's items must carry exactly the trie's SIDs")
        if neighbours < 1:
            raise ValueError(f"the look-ahead needs at least one neighbour, got {neighbours}")
        self.items, self.trie, self.index, self.neighbours = items, trie, index, neighbours
        self._copies: dict[torch.device, SimilarityGuide] = {trie.device: self}
        sid = np.empty(index.n, np.int64)
        sid[items.members] = np.repeat(np.arange(len(items.sids)), np.diff(items.starts))
        self.item_sid = torch.from_numpy(sid).to(trie.device)  # (N,) each item's row in trie.sids
        self.sid_codes = torch.from_numpy(trie.sids).to(trie.device)  # (G, L)

    def to(self, trie: SIDTrie) -> "SimilarityGuide":
        """The same guide for `trie`, this trie on another device (made once per device, then kept:
        the searcher asks for it on every search)."""
        if trie.device not in self._copies:
            other = object.__new__(SimilarityGuide)
            other.__dict__.update(self.__dict__)
            other.trie, other.item_sid, other.sid_codes = trie, self.item_sid.to(trie.device), \
                self.sid_codes.to(trie.device)
            self._copies[trie.device] = other
        return self._copies[trie.device]

    def bonuses(self, query_embedding, weight: float) -> Bonuses:
        """(B, D) photos -> their `Bonuses` (weight x cosines), on the trie's device."""
        query = query_embedding.detach().float().cpu().numpy() if torch.is_tensor(query_embedding) \
            else np.asarray(query_embedding, np.float32)
        k = min(self.neighbours, self.index.n)
        sims, rows = self.index.search(query, k)
        device = self.trie.device
        hit = torch.from_numpy(rows >= 0).to(device)
        sid = self.item_sid[torch.from_numpy(np.maximum(rows, 0)).to(device)]  # (B, K)
        value = torch.where(hit, weight * torch.from_numpy(sims).to(device), float("-inf"))
        if k >= self.index.n and (rows >= 0).all():  # (on the host: no device sync)
            floor = torch.full((len(query),), float("-inf"), device=device)  # every prefix holds a hit
        else:  # no item outside the hits is nearer than the farthest hit (a photo without hits: cosine <= 1)
            floor = torch.where(hit, value, float("inf")).amin(1).clamp(max=float(weight))
        nodes = [torch.zeros_like(sid)] + [n[sid] for n in self.trie.sid_nodes[:-1]]
        return Bonuses(self.trie.sizes, torch.stack(nodes), self.sid_codes[sid].permute(2, 0, 1), value, floor)
