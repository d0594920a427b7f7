"""The catalog's valid SIDs compiled once into flat tensors, so that beam search can mask and
advance whole batches of hypotheses with tensor operations, on the model's device, instead of
walking a Python trie or copying hypotheses to the host every step.

Per level l: every prefix of length l is a node (ids in lexicographic order); the edges leaving
level l are the sorted keys `node * K_l + code` with the child node of each. Allowed codes come
from a dense (nodes x K_l) mask while it is small (the shallow levels), else from CSR ranges
over the sorted keys (as in youtube/static-constraint-decoding). `to(device)` gives the same
trie on another device (one copy per device, kept)."""

from __future__ import annotations

import numpy as np
import torch

DENSE_LIMIT = 1 << 24  # booleans in one level's dense mask


def _tensor(x, device: torch.device) -> torch.Tensor:
    return x.to(device) if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.int64), device=device)


class SIDTrie:
    def __init__(self, sids: np.ndarray, sizes: tuple[int, ...], device: str | torch.device = "cpu"):
        sids = np.asarray(sids, dtype=np.int64)
        if sids.ndim != 2 or sids.shape[1] != len(sizes) or not len(sids):
            raise ValueError(f"need SIDs of {len(sizes)} codes, got shape {sids.shape}")
        if (sids < 0).any() or (sids >= np.asarray(sizes)).any():
            raise ValueError(f"SID codes outside the sizes {sizes}")
        if not (np.diff(np.ravel_multi_index(sids.T, sizes)) > 0).all():  # distinct and sorted: kept, not copied
            sids = np.unique(sids, axis=0)
        self.sids, self.sizes = sids, tuple(int(s) for s in sizes)
        self.device = torch.device(device)
        node = [np.zeros(len(sids), dtype=np.int64)]  # node id of each SID's prefix of length l
        for level in range(1, len(sizes) + 1):
            node.append(np.unique(sids[:, :level], axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64))
        self.n_nodes = [int(n.max()) + 1 for n in node]
        # each SID's node at every level 1..L (the look-ahead finds its neighbours' prefixes by them)
        self.sid_nodes = [torch.from_numpy(n) for n in node[1:]]
        self.keys: list[torch.Tensor] = []  # per level, the sorted edge keys node * K + code
        self.child: list[torch.Tensor] = []  # the child node of each key
        self.dense: list[torch.Tensor | None] = []  # per level, a (nodes, codes) mask where small enough
        self.ptr: list[torch.Tensor] = []  # CSR: node n's keys are keys[ptr[n]:ptr[n + 1]]
        for level, k in enumerate(self.sizes):
            keys, first = np.unique(node[level] * k + sids[:, level], return_index=True)
            child = node[level + 1][first]
            self.keys.append(torch.from_numpy(keys))
            self.child.append(torch.from_numpy(child))
            if self.n_nodes[level] * k <= DENSE_LIMIT:
                mask = np.zeros((self.n_nodes[level], k), dtype=bool)
                mask[keys // k, keys % k] = True
                self.dense.append(torch.from_numpy(mask))
            else:
                self.dense.append(None)  # a level too wide for a dense table
            self.ptr.append(torch.from_numpy(np.searchsorted(keys, np.arange(self.n_nodes[level] + 1) * k)))
        self._copies: dict[torch.device, SIDTrie] = {self.device: self}
        if self.device.type != "cpu":
            self._move(self.device)

    def _move(self, device: torch.device) -> None:
        def move(ts):
            return [None if t is None else t.to(device) for t in ts]
        self.sid_nodes, self.keys, self.child, self.ptr = (
            move(self.sid_nodes), move(self.keys), move(self.child), move(self.ptr))
        self.dense = move(self.dense)
        self.device = device

    def to(self, device: str | torch.device) -> "SIDTrie":
        """This trie on `device` (made once, then kept)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._copies:
            other = object.__new__(SIDTrie)
            other.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_copies"})
            other._move(device)
            other._copies = self._copies
            self._copies[device] = other
        return self._copies[device]

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def nbytes(self) -> int:
        """The trie's memory: its SIDs and every level's tables."""
        tensors = [*self.sid_nodes, *self.keys, *self.child, *self.ptr, *self.dense]
        return self.sids.nbytes + sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def allowed(self, level: int, nodes) -> torch.Tensor:
        """(len(nodes), K_level) booleans on the trie's device: the codes that extend each node to a
        valid prefix."""
        nodes = _tensor(nodes, self.device)
        dense = self.dense[level]
        if dense is not None:
            return dense[nodes]
        mask = torch.zeros((len(nodes), self.sizes[level]), dtype=torch.bool, device=self.device)
        rows, idx = self._edges(level, nodes)
        mask[rows, self.keys[level][idx] % self.sizes[level]] = True
        return mask

    def _edges(self, level: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The edges leaving `nodes` (CSR): (index into nodes, index into the level's keys)."""
        starts, ends = self.ptr[level][nodes], self.ptr[level][nodes + 1]
        counts = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=self.device), counts)
        first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
        return rows, first + torch.arange(len(rows), device=self.device)

    def advance(self, level: int, nodes, codes) -> torch.Tensor:
        """Child node ids (-1 where the code does not extend the node), on the trie's device."""
        keys = _tensor(nodes, self.device) * self.sizes[level] + _tensor(codes, self.device)
        pos = torch.searchsorted(self.keys[level], keys).clamp(max=len(self.keys[level]) - 1)
        return torch.where(self.keys[level][pos] == keys, self.child[level][pos], -1)

    def contains(self, sids: np.ndarray) -> np.ndarray:
        """Whether each full SID is in the trie."""
        sids = np.atleast_2d(np.asarray(sids, dtype=np.int64))
        nodes = torch.zeros(len(sids), dtype=torch.long, device=self.device)
        ok = torch.ones(len(sids), dtype=torch.bool, device=self.device)
        codes = torch.as_tensor(sids, device=self.device)
        for level in range(self.levels):
            nodes = self.advance(level, nodes.clamp(min=0), codes[:, level])
            ok &= nodes >= 0
        return ok.cpu().numpy()
