"""Decoder vocabulary: special tokens, then each SID level's codes at its own offset
(token = offset[level] + code), then any extra tokens (categories, title words) after them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPECIAL = ("<pad>", "<s>", "</s>", "<sep>", "<unk>", "<mask>")
PAD, BOS, EOS, SEP, UNK, MASK = range(len(SPECIAL))


@dataclass(frozen=True)
class SIDVocab:
    sizes: tuple[int, ...]
    extra: int = 0

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def offsets(self) -> np.ndarray:
        return len(SPECIAL) + np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def size(self) -> int:
        return len(SPECIAL) + int(sum(self.sizes)) + self.extra

    def level_range(self, level: int) -> tuple[int, int]:
        start = int(self.offsets[level])
        return start, start + self.sizes[level]

    def tokens(self, sids: np.ndarray) -> np.ndarray:
        sids = np.asarray(sids, dtype=np.int64)
        if sids.shape[-1] != self.levels or (sids < 0).any() or (sids >= np.asarray(self.sizes)).any():
            raise ValueError(f"SIDs must have {self.levels} codes within sizes {self.sizes}")
        return sids + self.offsets

    def codes(self, tokens: np.ndarray) -> np.ndarray:
        codes = np.asarray(tokens, dtype=np.int64) - self.offsets
        if (codes < 0).any() or (codes >= np.asarray(self.sizes)).any():
            raise ValueError("tokens outside their level's code range")
        return codes
