"""Tokenizer inputs from a catalog: image embeddings, category text embeddings, business stats.

Computed once per (catalog, encoder) and cached as an .npz: items (catalog view), their other
images (views and train-split shopper photos, the multi-view pairs), the catalog's other views
(for view consistency) and test-split shopper photos (for QAS). A query photo has no known
category: it takes the majority category of its 10 nearest catalog items (by image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onevision.ann import ItemIndex
from onevision.catalog.format import Catalog
from onevision.encoders.base import ImageEncoder
from onevision.items import log1p_known
from onevision.tokenizers.base import PairData, TokenizerInputs

BUSINESS_COLUMNS = ("clicks_30d", "orders_30d", "gmv_30d", "price")


def business_features(items) -> np.ndarray:
    """log1p of clicks, orders, GMV and price (columns a catalog lacks are zeros). An unknown value
    (NaN: an unknown price, GMV of orders at unknown prices) takes the median of the known ones
    (0 when none is known): unknown is typical, never free."""
    raw = np.stack([items[c].to_numpy(np.float64) if c in items.columns else np.zeros(len(items))
                    for c in BUSINESS_COLUMNS], 1)
    return log1p_known(raw).astype(np.float32)


@dataclass
class CatalogFeatures:
    items: TokenizerInputs
    pairs: PairData  # views and train photos of items
    views: PairData  # the catalog's non-catalog views only (view consistency)
    queries: TokenizerInputs  # test-split shopper photos
    query_target: np.ndarray  # item index of each test query

    def save(self, path: Path) -> None:
        arrays = {}
        for name, inp in (("items", self.items), ("pairs", self.pairs.inputs), ("views", self.views.inputs),
                          ("queries", self.queries)):
            arrays.update({f"{name}.visual": inp.visual, f"{name}.text": inp.text, f"{name}.business": inp.business})
        arrays.update({"pairs.item": self.pairs.item, "views.item": self.views.item,
                       "queries.target": self.query_target})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub takes the names for flags
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "CatalogFeatures":
        with np.load(path, allow_pickle=False) as z:
            inp = {n: TokenizerInputs(z[f"{n}.visual"], z[f"{n}.text"], z[f"{n}.business"])
                   for n in ("items", "pairs", "views", "queries")}
            return cls(inp["items"], PairData(inp["pairs"], z["pairs.item"]), PairData(inp["views"], z["views.item"]),
                       inp["queries"], z["queries.target"])


def predicted_category_text(query_vecs: np.ndarray, items: np.ndarray | ItemIndex, item_cat: np.ndarray,
                            cat_text: np.ndarray, k: int = 10) -> np.ndarray:
    """The category text of each query photo: its `k` nearest catalog items' majority category
    (`items`: their index when one is held, else their embeddings, searched exactly once)."""
    index = items if isinstance(items, ItemIndex) else ItemIndex(items, exact_up_to=len(items))
    _, nn_idx = index.search(query_vecs, k)
    votes = item_cat[nn_idx]
    majority = np.array([np.bincount(row).argmax() for row in votes])
    return cat_text[majority]


def item_inputs(catalog: Catalog, encoder: ImageEncoder,
                progress: bool = True) -> tuple[TokenizerInputs, np.ndarray, np.ndarray]:
    """Inputs of the catalog's items, plus each item's category index and the categories' text embeddings."""
    from onevision.encoders.text import TextEncoder

    cats, item_cat = np.unique(catalog.items["category"].to_numpy(), return_inverse=True)
    cat_text = TextEncoder().encode(list(cats))
    item_vecs = encoder.encode_files(catalog.item_images(), desc="items", progress=progress)
    return TokenizerInputs(item_vecs, cat_text[item_cat], business_features(catalog.items)), item_cat, cat_text


def build_features(catalog: Catalog, encoder: ImageEncoder, progress: bool = True) -> CatalogFeatures:
    items = catalog.items
    item_inputs_, item_cat, cat_text = item_inputs(catalog, encoder, progress)
    item_vecs, business = item_inputs_.visual, item_inputs_.business

    index_of = {item_id: k for k, item_id in enumerate(items["item_id"])}
    view_paths, view_item = [], []
    if "views" in items.columns:
        for k, views in enumerate(items["views"]):
            for v in views if views is not None else ():
                view_paths.append(catalog.path(v))
                view_item.append(k)
    train = catalog.queries[catalog.queries["split"] == "train"]
    test = catalog.queries[catalog.queries["split"] == "test"]
    photo_paths = [catalog.path(p) for p in train["image"]]
    photo_item = [index_of[t] for t in train["target_item_id"]]
    extra = encoder.encode_files(view_paths + photo_paths, desc="views and train photos", progress=progress)
    extra_item = np.array(view_item + photo_item, dtype=np.int64)
    no_business = np.zeros((len(extra), business.shape[1]), np.float32)
    pairs = PairData(TokenizerInputs(extra, cat_text[item_cat[extra_item]], no_business), extra_item)
    n_views = len(view_paths)
    views = PairData(pairs.inputs.take(slice(0, n_views)), extra_item[:n_views])

    q_vecs = encoder.encode_files([catalog.path(p) for p in test["image"]], desc="test photos", progress=progress)
    q_text = (predicted_category_text(q_vecs, item_vecs, item_cat, cat_text) if len(q_vecs)
              else np.zeros((0, cat_text.shape[1]), np.float32))
    queries = TokenizerInputs(q_vecs, q_text, np.zeros((len(q_vecs), business.shape[1]), np.float32))
    return CatalogFeatures(item_inputs_, pairs, views, queries,
                           np.array([index_of[t] for t in test["target_item_id"]], dtype=np.int64))
