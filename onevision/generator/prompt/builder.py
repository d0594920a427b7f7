"""The encoder's input: one fixed layout for every stage, so a model trained on one stage reads
the next stage's prompts without surprises.

    BOS  scene  long-term SID (L)  SEP  short-term SIDs (5 x L)  SEP  title (T)  SEP
    image SIDs (H x L)  SEP  visual (V)  EOS

The image SIDs are the photo's own SID (`generator.image_sid`; OneVision 3.2.2 feeds "the query
image and its corresponding SID"): the tokenizer's quantization of it, or the SIDs of its H
nearest catalog items; with `hint_similarity` the model also adds a projection of each hint's
cosine to the photo (and its gap to the nearest's) to the hint's tokens, so it knows how close
each candidate is, which the SID alone cannot say; with `sid_content` every SID slot also
carries its items' V embedding (`generator.sid_content`), so candidates can be compared with the
photo and with the shopper's clicks by what they look like. Empty slots (no title, a user with
no history, a shorter short-term list) are PAD with attention mask 0, so a cold-start user is
just a prompt whose user slots are empty. Visual positions hold the image's grid tokens then its
pooled embedding; their embeddings come from projections of V's features, not the token table
(`generator.model.OneVisionGenerator.embed`).

Extra tokens after the SID codes: the scenes, the categories (also the outputs of the category
pretraining tasks) and title words (the most frequent words of the catalog's titles).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from onevision.behaviour.short_term import SHORT_LEN
from onevision.generator.prompt.sid_content import SIDContent
from onevision.generator.prompt.vocab import BOS, EOS, MASK, PAD, SEP, SPECIAL, SIDVocab

SCENES = ("image_search", "search", "feed", "unknown")
WORD = re.compile(r"[a-z0-9]+")


def title_words(title: str) -> list[str]:
    return WORD.findall(str(title).lower())


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of everything a prompt can hold, and the layout's sizes."""

    sizes: tuple[int, ...]
    categories: tuple[str, ...]
    words: tuple[str, ...]
    scenes: tuple[str, ...] = SCENES
    title_len: int = 8
    n_visual: int = 17  # grid tokens + the pooled embedding
    n_hints: int = 1  # image SIDs in the prompt (generator.image_sid)
    hint_similarity: bool = True  # the model also reads each hint's cosine to the photo
    sid_content: bool = True  # every SID slot also carries its items' V embedding (generator.sid_content)

    @classmethod
    def from_catalog(cls, sizes: Sequence[int], categories: Iterable[str], titles: Iterable[str],
                     max_words: int = 2000, n_visual: int = 17, n_hints: int = 1,
                     hint_similarity: bool = True, sid_content: bool = True) -> "PromptTokens":
        counts = Counter(w for t in titles for w in title_words(t))
        words = tuple(sorted(w for w, _ in counts.most_common(max_words)))
        return cls(tuple(int(s) for s in sizes), tuple(sorted(set(categories))), words, n_visual=n_visual,
                   n_hints=n_hints, hint_similarity=hint_similarity, sid_content=sid_content)

    @property
    def vocab(self) -> SIDVocab:
        return SIDVocab(self.sizes, extra=len(self.scenes) + len(self.categories) + len(self.words))

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def scene_offset(self) -> int:
        return len(SPECIAL) + sum(self.sizes)

    @property
    def category_offset(self) -> int:
        return self.scene_offset + len(self.scenes)

    @property
    def word_offset(self) -> int:
        return self.category_offset + len(self.categories)

    @property
    def length(self) -> int:
        return self.hint_start + self.n_hints * self.levels + 1 + self.n_visual + 1

    @property
    def hint_start(self) -> int:
        """Position of the first image-SID token."""
        return 1 + 1 + self.levels + 1 + SHORT_LEN * self.levels + 1 + self.title_len + 1

    @property
    def sid_slots(self) -> np.ndarray:
        """(1 + 5 + H, L) positions of the SID slots: long-term, short-term, the image's."""
        L = self.levels
        starts = ([2] + [3 + L + j * L for j in range(SHORT_LEN)]
                  + [self.hint_start + h * L for h in range(self.n_hints)])
        return np.asarray(starts)[:, None] + np.arange(L)

    @property
    def visual_start(self) -> int:
        return self.length - 1 - self.n_visual

    def scene_ids(self, scenes: Sequence[str]) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.scenes)}
        return np.array([index.get(s, index["unknown"]) for s in scenes], dtype=np.int64) + self.scene_offset

    def category_index(self, categories: Sequence[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.categories)}
        missing = sorted(set(categories) - set(index))
        if missing:
            raise ValueError(f"unknown categories {missing[:3]}")
        return np.array([index[c] for c in categories], dtype=np.int64)

    def title_ids(self, titles: Sequence[str]) -> np.ndarray:
        index = {w: i + self.word_offset for i, w in enumerate(self.words)}
        out = np.full((len(titles), self.title_len), PAD, dtype=np.int64)
        for row, title in enumerate(titles):
            ids = [index[w] for w in title_words(title) if w in index][: self.title_len]
            out[row, : len(ids)] = ids
        return out

    def config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "PromptTokens":
        config = {"hint_similarity": False, "sid_content": False, **config}  # models saved before these existed
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})  # type: ignore[arg-type]


@dataclass
class Prompts:
    """A batch of prompts as arrays: token ids (visual positions hold MASK), attention mask and
    the visual features that fill the visual positions; with the SIDs of the user's recent clicks
    and orders, which the searcher's category affinity reads and the encoder does not."""

    ids: torch.Tensor  # (B, S) long
    mask: torch.Tensor  # (B, S) long
    grid: torch.Tensor  # (B, V - 1, d_grid) float
    embedding: torch.Tensor  # (B, d_emb) float
    hint_similarity: torch.Tensor  # (B, H) float: cosine of the photo to each hint item (0 if none)
    sid_content: torch.Tensor  # (B, 1 + 5 + H, d_emb) float: each SID slot's items' V embedding (0 if none)
    slots: torch.Tensor  # (B, 1 + 5 + H, L) long: the SID slots' codes (long-term, short-term x 5, hints; -1 if none)
    recent_sids: torch.Tensor  # (B, M, L) long: SIDs of the user's recent clicks and orders, oldest first (-1 rows pad)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, rows) -> "Prompts":
        return Prompts(self.ids[rows], self.mask[rows], self.grid[rows], self.embedding[rows],
                       self.hint_similarity[rows], self.sid_content[rows], self.slots[rows], self.recent_sids[rows])

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def to(self, device: torch.device | str) -> "Prompts":
        """The batch on `device` (itself when already there). Host tensors are pinned first when
        they go to a GPU, so the copies run asynchronously."""
        device = torch.device(device)
        if self.ids.device == device:
            return self
        fields = (self.ids, self.mask, self.grid, self.embedding, self.hint_similarity, self.sid_content, self.slots,
                  self.recent_sids)
        pin = device.type == "cuda" and self.ids.device.type == "cpu"
        return Prompts(*((t.pin_memory() if pin else t).to(device, non_blocking=pin) for t in fields))

    @property
    def short_sids(self) -> np.ndarray:
        """(B, 5, L) the short-term SIDs' codes, -1 rows missing."""
        return self.slots[:, 1:1 + SHORT_LEN].cpu().numpy()


@dataclass
class PromptInputs:
    """One batch of requests as arrays (B rows): V's visual-token grid (B, T, 320) and embedding
    (B, D), scene token ids (B,), long-term SIDs (B, L), short-term SIDs (B, 5, L) and the images'
    SIDs (B, H, L) with -1 rows for missing ones and their cosines to the image (B, H), title token
    ids (B, T) with PAD, and `recent_sids` (B, M, L) the SIDs of the user's recent clicks and orders
    (-1 rows pad). A part left None is blank (e.g. a user without history)."""

    grid: np.ndarray
    embedding: np.ndarray
    scene: np.ndarray
    long_sid: np.ndarray | None = None
    short_sids: np.ndarray | None = None
    title: np.ndarray | None = None
    image_sid: np.ndarray | None = None
    hint_similarity: np.ndarray | None = None
    recent_sids: np.ndarray | None = None


def build_prompts(tokens: PromptTokens, inputs: PromptInputs, content: SIDContent | None = None) -> Prompts:
    """The model's prompts for `inputs`; `content` gives each SID slot its items' V embedding."""
    grid, embedding, scene, long_sid, short_sids, title, image_sid, hint_similarity, recent_sids = (
        inputs.grid, inputs.embedding, inputs.scene, inputs.long_sid, inputs.short_sids, inputs.title,
        inputs.image_sid, inputs.hint_similarity, inputs.recent_sids)
    b, levels = len(grid), tokens.levels
    slots = np.full((b, len(tokens.sid_slots), levels), -1, np.int64)  # long, short x 5, image SIDs
    vocab = tokens.vocab
    ids = np.full((b, tokens.length), PAD, dtype=np.int64)
    ids[:, 0], ids[:, 1] = BOS, scene
    pos = 2
    if long_sid is not None:
        ids[:, pos:pos + levels] = _sid_tokens(vocab, long_sid)
        slots[:, 0] = long_sid
    pos += levels
    ids[:, pos] = SEP
    pos += 1
    if short_sids is not None:
        ids[:, pos:pos + SHORT_LEN * levels] = _sid_tokens(vocab, short_sids[:, :SHORT_LEN]).reshape(b, -1)
        slots[:, 1:1 + short_sids[:, :SHORT_LEN].shape[1]] = short_sids[:, :SHORT_LEN]
    pos += SHORT_LEN * levels
    ids[:, pos] = SEP
    pos += 1
    if title is not None:
        ids[:, pos:pos + tokens.title_len] = title[:, : tokens.title_len]
    pos += tokens.title_len
    ids[:, pos] = SEP
    pos += 1
    if image_sid is not None:
        hints = np.asarray(image_sid).reshape(b, -1, levels)[:, : tokens.n_hints]
        ids[:, pos:pos + hints.shape[1] * levels] = _sid_tokens(vocab, hints).reshape(b, -1)
        slots[:, 1 + SHORT_LEN:1 + SHORT_LEN + hints.shape[1]] = hints
    pos += tokens.n_hints * levels
    ids[:, pos] = SEP
    ids[:, tokens.visual_start:-1] = MASK
    ids[:, -1] = EOS
    sims = np.zeros((b, tokens.n_hints), np.float32)
    if hint_similarity is not None:
        given = np.asarray(hint_similarity, np.float32).reshape(b, -1)[:, : tokens.n_hints]
        sims[:, : given.shape[1]] = given
    embedding = np.asarray(embedding, dtype=np.float32)
    slot_emb = content.lookup(slots) if content is not None \
        else np.zeros((*slots.shape[:2], embedding.shape[-1]), np.float32)
    return Prompts(torch.from_numpy(ids), torch.from_numpy((ids != PAD).astype(np.int64)),
                   torch.from_numpy(np.asarray(grid, dtype=np.float32)), torch.from_numpy(embedding),
                   torch.from_numpy(sims), torch.from_numpy(slot_emb), torch.from_numpy(slots),
                   torch.from_numpy(np.asarray(recent_sids, np.int64).reshape(b, -1, levels) if recent_sids is not None
                                    else np.full((b, 0, levels), -1, np.int64)))


def _sid_tokens(vocab: SIDVocab, sids: np.ndarray) -> np.ndarray:
    """SID codes to tokens; rows holding -1 (missing) become PAD."""
    sids = np.asarray(sids, dtype=np.int64)
    missing = (sids < 0).any(axis=-1, keepdims=True)
    out = np.where(missing, 0, sids) + vocab.offsets
    return np.where(missing, PAD, out)
