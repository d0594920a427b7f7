"""Give SIDs to items with a trained tokenizer, without retraining: the catalog can grow while
serving. The tokenizer's config names the encoder version it was trained on; that encoder,
the category text encoder and the item's business stats make its inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from onevision.catalog.format import Catalog, write_table
from onevision.encoders.aligned import AlignedEfficientNet, AlignedImageEncoder
from onevision.registry import load_version, resolve
from onevision.tokenizers import load_tokenizer
from onevision.tokenizers.inputs import item_inputs


def write_item_sids(item_ids: Sequence[str], sids: np.ndarray, path: Path, vectors: np.ndarray | None = None) -> None:
    """The item -> SID table (item_id, sid as a list of ints) every later stage reads, with each
    item's quantized vector (what its codes reconstruct) when given: the streaming long-term
    SID averages these and re-quantizes the mean to the nearest catalog SID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {"item_id": list(item_ids), "sid": [list(map(int, r)) for r in sids]}
    if vectors is not None:
        table["vector"] = [np.asarray(v, dtype=np.float32) for v in vectors]
    write_table(pd.DataFrame(table), path)


def encode_catalog_items(tokenizer_version: str | Path, catalog: Catalog, out: Path, progress: bool = True) -> int:
    version = resolve(tokenizer_version)
    tok = load_tokenizer(version)
    _, config = load_version(version)
    encoder = AlignedImageEncoder(AlignedEfficientNet.load(resolve(config["encoder"])))
    inputs, _, _ = item_inputs(catalog, encoder, progress)
    sids = tok.encode(inputs)
    write_item_sids(catalog.items["item_id"], sids, out, tok.quantized(inputs))
    return len(sids)


@dataclass
class EncodedItems:
    sids: np.ndarray  # (n, L) int64
    vectors: np.ndarray  # (n, d) what the codes reconstruct (the workers' long-term SIDs average these)
    embedding: np.ndarray  # (n, D) V's embedding of each photo (what the searcher and its index compare)


class NewItemEncoder:
    """SIDs for items a trained tokenizer has never seen (new items, new photos): V's embedding of
    the photo, the category's text embedding and the business stats of an item with no history
    (its price; an unknown one takes the reference catalog's median), quantized by the tokenizer
    as its training items were. Nothing is retrained."""

    def __init__(self, tokenizer_version: str | Path, encoder: AlignedEfficientNet | None = None):
        from onevision.registry import resolve_ref, version_name

        self.version = resolve(tokenizer_version)
        self.name = version_name(self.version)
        self.tok = load_tokenizer(self.version)
        config = load_version(self.version)[1]
        self.encoder = (encoder or AlignedEfficientNet.load(resolve_ref(config["encoder"], self.version))).eval()
        self.text_of: dict[str, np.ndarray] = {}

    def _text(self, categories: Sequence[str]) -> np.ndarray:
        missing = sorted({c for c in categories if c not in self.text_of})
        if missing:
            from onevision.encoders.text import TextEncoder

            self.text_of.update(zip(missing, TextEncoder().encode(missing)))
        return np.stack([self.text_of[c] for c in categories]).astype(np.float32)

    def encode(self, photos: Sequence[bytes | str | Path], items: pd.DataFrame,
               reference: pd.DataFrame | None = None) -> EncodedItems:
        """`photos` (bytes or paths) of `items` (rows: category, price; stats columns count as 0)."""
        from onevision.encoders.visual_tokens import encode_images
        from onevision.images import load_rgb
        from onevision.tokenizers.base import TokenizerInputs
        from onevision.tokenizers.inputs import BUSINESS_COLUMNS, business_features

        if len(photos) != len(items):
            raise ValueError(f"{len(photos)} photos for {len(items)} items")
        if not len(items):
            return EncodedItems(np.zeros((0, self.tok.levels), np.int64), np.zeros((0, 0), np.float32),
                                np.zeros((0, 0), np.float32))
        def columns(df: pd.DataFrame) -> pd.DataFrame:  # unknown price NaN, no history 0
            return pd.DataFrame({c: df[c].to_numpy(np.float64) if c in df.columns else
                                 np.full(len(df), np.nan if c == "price" else 0.0) for c in BUSINESS_COLUMNS})

        both = pd.concat([columns(reference), columns(items)], ignore_index=True) if reference is not None \
            else columns(items)
        business = business_features(both)[-len(items):]
        embedding = encode_images(self.encoder, [load_rgb(p) for p in photos]).embedding
        inputs = TokenizerInputs(embedding, self._text([str(c) for c in items["category"]]), business)
        return EncodedItems(np.asarray(self.tok.encode(inputs), np.int64), np.asarray(self.tok.quantized(inputs),
                                                                                        np.float32), embedding)


def change_batches(old: Catalog, new: Catalog, encoder: NewItemEncoder | Callable[[], NewItemEncoder], ts: int,
                   batch: int = 32) -> Iterator[list]:
    """The change records (`catalog.changes.ItemChange`) that turn catalog `old` into `new`, in
    batches a publisher can send as they come: first the removals and the updates without a new
    photo (nothing to encode: a removed item leaves search at once), then the new photos' updates
    (with their other fields) and the additions, `batch` items at a time, each photo encoded with
    `encoder` (the serving tokenizer; given as a function, it is loaded only when the first photo
    needs it)."""
    from onevision.catalog.changes import diff_catalogs, new_change, photo_text

    diff = diff_catalogs(old, new)
    rows = new.items.set_index("item_id")

    def price(item: str) -> float | None:
        p = rows.at[item, "price"]
        return None if pd.isna(p) else float(p)

    def fields(item: str) -> dict:
        return {f: (price(item) if f == "price" else str(rows.at[item, f])) for f in diff.updated[item] if f != "image"}

    photos = [i for i, changed in diff.updated.items() if "image" in changed] + list(diff.added["item_id"])
    first = [new_change("remove", item, ts) for item in diff.removed]
    first += [new_change("update", item, ts, **fields(item)) for item, changed in diff.updated.items()
              if "image" not in changed]
    if first:
        yield first
    for start in range(0, len(photos), batch):
        if not isinstance(encoder, NewItemEncoder):
            encoder = encoder()
        ids = photos[start:start + batch]
        paths = [new.path(rows.at[i, "image"]) for i in ids]
        got = encoder.encode(paths, rows.loc[ids].reset_index(), reference=old.items)
        out = []
        for k, item in enumerate(ids):
            encoded = {"image": photo_text(paths[k].read_bytes()), "sid": got.sids[k].tolist(),
                       "vector": got.vectors[k].tolist(), "embedding": got.embedding[k].tolist(),
                       "tokenizer": encoder.name}
            if item in diff.updated:
                out.append(new_change("update", item, ts, **fields(item), **encoded))
            else:
                out.append(new_change("add", item, ts, title=str(rows.at[item, "title"]),
                                      category=str(rows.at[item, "category"]), price=price(item), **encoded))
        yield out


def changes_between(old: Catalog, new: Catalog, encoder: NewItemEncoder, ts: int, batch: int = 256) -> list:
    """Every record of `change_batches`, as one list."""
    return [c for part in change_batches(old, new, encoder, ts, batch) for c in part]
