"""The catalog's valid SIDs compiled once into flat arrays, so that beam search can mask and
advance whole batches of hypotheses with array operations instead of walking a Python trie.

Per level l: every prefix of length l is a node (ids in lexicographic order); the edges leaving
level l are the sorted keys `node * K_l + code` with the child node of each. Allowed codes come
from a dense (nodes x K_l) mask while it is small (the shallow levels), else from CSR ranges
over the sorted keys (as in youtube/static-constraint-decoding)."""

from __future__ import annotations

import numpy as np
import torch

DENSE_LIMIT = 1 << 24  # booleans in one level's dense mask


class SIDTrie:
    def __init__(self, sids: np.ndarray, sizes: tuple[int, ...]):
        sids = np.unique(np.asarray(sids, dtype=np.int64), axis=0)
        if sids.ndim != 2 or sids.shape[1] != len(sizes) or not len(sids):
            raise ValueError(f"need SIDs of {len(sizes)} codes, got shape {sids.shape}")
        if (sids < 0).any() or (sids >= np.asarray(sizes)).any():
            raise ValueError(f"SID codes outside the sizes {sizes}")
        self.sids, self.sizes = sids, tuple(int(s) for s in sizes)
        node = [np.zeros(len(sids), dtype=np.int64)]  # node id of each SID's prefix of length l
        for level in range(1, len(sizes) + 1):
            node.append(np.unique(sids[:, :level], axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64))
        self.n_nodes = [int(n.max()) + 1 for n in node]
        # the SIDs are sorted, so each node of level l is a run of them: the row its run starts at
        self.node_starts = [np.searchsorted(n, np.arange(c)) for n, c in zip(node, self.n_nodes)]
        self.keys: list[np.ndarray] = []
        self.child: list[np.ndarray] = []
        self.dense: list[torch.Tensor | None] = []  # per level, a (nodes, codes) mask where small enough
        self.dense_child: list[np.ndarray | None] = []
        self.ptr, self.codes = [], []
        for level, k in enumerate(self.sizes):
            keys, first = np.unique(node[level] * k + sids[:, level], return_index=True)
            self.keys.append(keys)
            self.child.append(node[level + 1][first])
            if self.n_nodes[level] * k <= DENSE_LIMIT:
                mask = np.zeros((self.n_nodes[level], k), dtype=bool)
                mask[keys // k, keys % k] = True
                self.dense.append(torch.from_numpy(mask))
                table = np.full((self.n_nodes[level], k), -1, dtype=np.int64)
                table[keys // k, keys % k] = self.child[-1]
                self.dense_child.append(table)
            else:
                self.dense.append(None)  # a level too wide for a dense table
                self.dense_child.append(None)
            self.ptr.append(np.searchsorted(keys, np.arange(self.n_nodes[level] + 1, dtype=np.int64) * k))
            self.codes.append(keys % k)

    @property
    def levels(self) -> int:
        return len(self.sizes)

    def allowed(self, level: int, nodes: np.ndarray) -> torch.Tensor:
        """(len(nodes), K_level) booleans: the codes that extend each node to a valid prefix."""
        dense = self.dense[level]
        if dense is not None:
            return dense[torch.from_numpy(np.asarray(nodes, dtype=np.int64))]
        mask = torch.zeros((len(nodes), self.sizes[level]), dtype=torch.bool)
        rows, idx = self._edges(level, nodes)
        mask[torch.from_numpy(rows), torch.from_numpy(self.codes[level][idx])] = True
        return mask

    def children(self, level: int, nodes: np.ndarray) -> np.ndarray:
        """(len(nodes), K_level) the child node (level + 1) each code leads to, -1 where none."""
        dense_child = self.dense_child[level]
        if dense_child is not None:
            return dense_child[np.asarray(nodes, dtype=np.int64)]
        out = np.full((len(nodes), self.sizes[level]), -1, dtype=np.int64)
        rows, idx = self._edges(level, nodes)
        out[rows, self.codes[level][idx]] = self.child[level][idx]
        return out

    def _edges(self, level: int, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The edges leaving `nodes` (CSR): (index into nodes, index into the level's keys)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        starts, ends = self.ptr[level][nodes], self.ptr[level][nodes + 1]
        counts = ends - starts
        rows = np.repeat(np.arange(len(nodes)), counts)
        idx = np.repeat(starts - np.cumsum(np.concatenate([[0], counts[:-1]])), counts) + np.arange(counts.sum())
        return rows, idx

    def advance(self, level: int, nodes: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Child node ids (-1 where the code does not extend the node)."""
        keys = np.asarray(nodes, dtype=np.int64) * self.sizes[level] + np.asarray(codes, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys[level], keys), len(self.keys[level]) - 1)
        found = self.keys[level][pos] == keys
        return np.where(found, self.child[level][pos], -1)

    def contains(self, sids: np.ndarray) -> np.ndarray:
        """Whether each full SID is in the trie."""
        sids = np.atleast_2d(np.asarray(sids, dtype=np.int64))
        nodes = np.zeros(len(sids), dtype=np.int64)
        ok = np.ones(len(sids), dtype=bool)
        for level in range(self.levels):
            nodes = self.advance(level, np.maximum(nodes, 0), sids[:, level])
            ok &= nodes >= 0
        return ok
