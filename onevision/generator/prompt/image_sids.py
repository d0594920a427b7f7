"""The tokenizer's own SID of any image, an input of the generator's prompt.

OneVision 3.2.2: SFT "takes the query image and its corresponding SID as input and outputs the
SID of the matched product". A catalog image's SID is its item's; any other image (a view, a
shopper photo) is quantized by the tokenizer from V's embedding, with the category text of its
10 nearest catalog items (majority vote) and no business stats, exactly as the tokenizer's
query inputs are built (`tokenizers.inputs`). The photo's SID often differs from the bought
item's below the first level (multi-view drift); the generator learns to correct it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onevision.ann import ItemIndex
from onevision.tokenizers import Tokenizer, load_tokenizer
from onevision.tokenizers.base import TokenizerInputs
from onevision.tokenizers.inputs import predicted_category_text

MODES = ("tokenizer", "nearest-item", "none")  # none: the image alone (IRGen-like)


class ImageSIDs:
    """mode `tokenizer`: the tokenizer quantizes the photo (one SID); `nearest-item`: the SIDs
    of the `hints` catalog items nearest the photo in V's space (the photo snapped onto valid
    SIDs), nearest first. Both find the nearest items in the catalog's `ann.ItemIndex`, built
    with the model (or the searcher's, given instead of the embeddings), never inside a request."""

    def __init__(self, tokenizer: Tokenizer, item_embedding: np.ndarray | ItemIndex | None, item_category: np.ndarray,
                 category_text: np.ndarray, n_business: int, without: str | None = None,
                 item_sids: np.ndarray | None = None, mode: str = "tokenizer", hints: int = 1):
        if mode not in MODES:
            raise ValueError(f"unknown image-SID mode {mode!r}; choose from {', '.join(MODES)}")
        self.tok = tokenizer
        self.item_category, self.category_text = np.asarray(item_category), np.asarray(category_text, np.float32)
        self.n_business, self.without = n_business, without
        if mode == "tokenizer" and hints != 1:
            raise ValueError("the tokenizer gives one SID per image; use hints=1")
        if (mode == "none") != (hints == 0):
            raise ValueError("mode 'none' and only it has no image SIDs (hints=0)")
        self.item_sids, self.mode, self.hints = item_sids, mode, hints
        # the items' ANN index (None before `with_items` gives it one, or in mode none)
        self.index = ItemIndex.of(item_embedding) if mode != "none" and item_embedding is not None else None
        self.text_of: dict[str, np.ndarray] = {}  # category name -> its text embedding (`with_items`)

    def with_items(self, categories, index: ItemIndex, item_sids: np.ndarray) -> "ImageSIDs":
        """The same tokenizer and mode over other items (a changed catalog): their categories (one
        name per item), their ANN index and SIDs. Only a category never seen is text-encoded."""
        names, item_cat = np.unique(np.asarray(categories, dtype=object).astype(str), return_inverse=True)
        missing = [n for n in names if n not in self.text_of]
        if missing:
            from onevision.encoders.text import TextEncoder

            self.text_of.update(zip(missing, TextEncoder().encode(missing)))
        out = ImageSIDs(self.tok, index, item_cat, np.stack([self.text_of[n] for n in names]), self.n_business,
                        self.without, np.asarray(item_sids, np.int64), self.mode, self.hints)
        out.text_of = self.text_of
        return out

    def encode(self, embedding: np.ndarray) -> np.ndarray:
        """(B, hints, L) SIDs of images from V's embeddings (B, D)."""
        return self.encode_scored(embedding)[0]

    def encode_scored(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode` and (B, hints) cosines between each image and its hint items (0 where a hint
        is no catalog item: modes `tokenizer` and `none`)."""
        embedding = np.asarray(embedding, np.float32)
        zeros = np.zeros((len(embedding), self.hints), np.float32)
        if not len(embedding) or self.mode == "none":
            return np.zeros((len(embedding), self.hints, self.tok.levels), np.int64), zeros
        if self.mode == "nearest-item":
            assert self.index is not None  # built unless mode none
            sims, rows = self.index.search(embedding, self.hints)
            assert self.item_sids is not None  # set in nearest-item mode
            return self.item_sids[rows], sims.astype(np.float32)
        assert self.index is not None
        text = predicted_category_text(embedding, self.index, self.item_category, self.category_text)
        if self.without == "category":
            text = np.zeros_like(text)
        inputs = TokenizerInputs(embedding, text, np.zeros((len(embedding), self.n_business), np.float32))
        return self.tok.encode(inputs)[:, None], zeros

    @classmethod
    def from_version(cls, tokenizer_version: str | Path, categories, item_embedding: np.ndarray | ItemIndex | None,
                     mode: str = "tokenizer", hints: int = 1) -> "ImageSIDs":
        """From a tokenizer registry version and the catalog items' categories (tokenizer order);
        without `item_embedding`, for `with_items` to give it items."""
        from onevision.encoders.text import TextEncoder
        from onevision.registry import load_version

        config = load_version(tokenizer_version)[1]
        tok = load_tokenizer(tokenizer_version)
        names, item_cat = np.unique(np.asarray(categories), return_inverse=True)
        n_business = int(config["tokenizer"].get("n_business", 4))
        from onevision.items import load_item_table

        text = TextEncoder().encode(list(names))
        out = cls(tok, item_embedding, item_cat, text, n_business, config.get("without"),
                  load_item_table(tokenizer_version, vectors=False).sids, mode, hints)
        out.text_of = dict(zip(names.tolist(), text))
        return out
