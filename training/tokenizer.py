"""Recipe: train a SID tokenizer on a catalog, measure it, publish it with the items' SIDs.

Steps: the aligned encoder V (from the registry, or aligned now), the catalog features
(cached per catalog and encoder version), the tokenizer fit, the SID quality metrics, and a
registry version `tokenizer-<method>-<catalog>` holding the weights, config, metrics and
`item_sids.parquet`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from onevision.catalog.format import Catalog, catalog_fingerprint, catalog_key
from onevision.encoders.aligned import AlignedEfficientNet, AlignedImageEncoder
from onevision.encoders.base import ImageEncoder
from onevision.encoders.visual_tokens import VisualTokens, encode_files, save_tokens
from onevision.generator.data import bank_paths, visual_cache, weights_sha
from onevision.items import ITEM_SIDS
from onevision.metrics.sid import quantized_ann_score, sid_report
from onevision.registry import current_for_catalog, publish
from onevision.tokenizers import PAPER_SIZES, Tokenizer, default_sizes, make_tokenizer, save_tokenizer
from onevision.tokenizers.encode_items import write_item_sids
from onevision.tokenizers.inputs import CatalogFeatures, build_features
from onevision.tokenizers.vrq import VRQTraining
from training.align_encoder import AlignRecipe
from training.point_in_time import point_in_time


@dataclass(frozen=True)
class TokenizerRecipe:
    """Training lengths of the encoder alignment and the trained tokenizers; sizes (None = sized to the catalog)."""

    align: AlignRecipe = field(default_factory=AlignRecipe)
    vrq: VRQTraining = field(default_factory=VRQTraining)
    rqvae_steps: int = 1500
    sizes: tuple[int, ...] | None = None

    def options(self, method: str) -> dict:
        return {"vrq": {"training": self.vrq}, "rqvae": {"steps": self.rqvae_steps}}.get(method, {})


RECIPES: dict[str, TokenizerRecipe] = {
    "tiny": TokenizerRecipe(AlignRecipe(steps=30, batch_size=32),
                            VRQTraining(warmup_steps=30, steps=90, batch_size=128), rqvae_steps=100),
    "small": TokenizerRecipe(),
    "quick": TokenizerRecipe(),  # alignment and VRQ as small: 150 alignment steps cost 5 points of ANN HR@4
    "paper": TokenizerRecipe(sizes=PAPER_SIZES),
}


def recipe(name: str) -> TokenizerRecipe:
    if name not in RECIPES:
        raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


class PrecomputedEncoder(ImageEncoder):
    """An encoder that answers from embeddings already computed (e.g. during alignment)."""

    def __init__(self, base: ImageEncoder, known: dict[str, np.ndarray]):
        self.base, self.known, self.name, self.dim = base, known, base.name, base.dim

    def encode_arrays(self, images: Sequence) -> np.ndarray:
        return self.base.encode_arrays(images)

    def encode_files(self, paths, desc: str = "encoding", progress: bool = True) -> np.ndarray:
        missing = [str(p) for p in paths if str(p) not in self.known]
        if missing:
            self.known.update(zip(missing, self.base.encode_files(missing, desc=desc, progress=progress)))
        return np.stack([self.known[str(p)] for p in paths]) if len(paths) else np.zeros((0, self.dim), np.float32)


def ensure_encoder(catalog: Catalog, registry: Path, align: AlignRecipe, progress: bool = True,
                   cache: Path | None = None) -> tuple[Path, ImageEncoder]:
    """The current aligned encoder of this catalog, aligning one first if there is none (a fresh
    alignment's embeddings of the views and train photos answer the returned encoder; with `cache`,
    its outputs also become the generator's image bank there, see `seed_image_bank`)."""
    model = f"encoder-{catalog.name}"
    version = current_for_catalog(registry, model, catalog_fingerprint(catalog))
    if version is not None:
        return version, AlignedImageEncoder(AlignedEfficientNet.load(version))
    from training.align_encoder import publish_encoder, train_aligned_encoder

    aligned, log = train_aligned_encoder(catalog, align, progress=progress)
    with tempfile.TemporaryDirectory() as work:
        version = publish_encoder(aligned, align, catalog, log, registry, Path(work))
    known = {str(p): v for p, v in zip(log["paths"], log["embeddings"])}
    if cache is not None:
        known = seed_image_bank(catalog, version, cache, aligned, log, progress)
    return version, PrecomputedEncoder(AlignedImageEncoder(aligned), known)


def seed_image_bank(catalog: Catalog, version: Path, cache: Path, model: AlignedEfficientNet, log: dict,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """Write the generator's image bank (`image_bank`'s cache: every item image, view and shopper
    photo) from a fresh alignment's own head outputs, encoding only the photos alignment never saw
    (val and test), so no image goes through V twice. Returns every bank image's embedding by path."""
    keys = bank_paths(catalog)
    paths = [str(catalog.path(k)) for k in keys]
    row = {p: i for i, p in enumerate(map(str, log["paths"]))}
    missing = list(dict.fromkeys(p for p in paths if p not in row))
    seen = VisualTokens(log["tokens"], log["embeddings"])
    if missing:
        fresh = encode_files(model, missing, desc="val and test photos", progress=progress)
        seen = VisualTokens(np.concatenate([seen.tokens, fresh.tokens]),
                            np.concatenate([seen.embedding, fresh.embedding]))
        row.update({p: len(log["paths"]) + i for i, p in enumerate(missing)})
    take = np.array([row[p] for p in paths], dtype=np.int64)
    tokens, embedding = seen.tokens[take], seen.embedding[take]
    save_tokens(visual_cache(catalog, version, cache), VisualTokens(tokens, embedding), keys)
    return dict(zip(paths, embedding))


def features_cache(catalog: Catalog, encoder_version: Path, cache: Path) -> Path:
    """The CatalogFeatures file of this encoder version (keyed on its weights too, so a rebuilt
    registry never hits a stale cache)."""
    v = Path(encoder_version)
    return Path(cache) / catalog_key(catalog) / f"{v.parent.name}-{v.name}-{weights_sha(v)}.npz"


def ensure_features(catalog: Catalog, registry: Path, cache: Path, align: AlignRecipe,
                    progress: bool = True) -> tuple[Path, CatalogFeatures]:
    point_in_time(catalog, cache)  # business features as known at the training cutoff
    encoder_version, encoder = ensure_encoder(catalog, registry, align, progress, cache)
    path = features_cache(catalog, encoder_version, cache)
    if path.is_file():
        return encoder_version, CatalogFeatures.load(path)
    features = build_features(catalog, encoder, progress=progress)
    features.save(path)
    return encoder_version, features


def measure(tok: Tokenizer, catalog: Catalog, features: CatalogFeatures) -> tuple[np.ndarray, dict]:
    """Item SIDs and every quality metric (QAS over the test photos)."""
    sids = tok.encode(features.items)
    view_sids = tok.encode(features.views.inputs) if len(features.views.item) else None
    report = sid_report(sids, tok.sizes, catalog.items["category"].to_numpy(), view_sids, features.views.item)
    if len(features.query_target):
        report["QAS"] = quantized_ann_score(tok.quantized(features.items), tok.quantized(features.queries),
                                            features.query_target, k=4)
    return sids, report


ABLATIONS = ("business", "category")  # OneVision Table 2: VRQ without business / category features


def ablate(features: CatalogFeatures, without: str | None) -> CatalogFeatures:
    """The same features with one input zeroed everywhere (items, pairs, views, queries)."""
    if without is None:
        return features
    if without not in ABLATIONS:
        raise ValueError(f"unknown ablation {without!r}; choose from {', '.join(ABLATIONS)}")
    field_ = {"business": "business", "category": "text"}[without]

    def zero(inp):
        return replace(inp, **{field_: np.zeros_like(getattr(inp, field_))})
    return CatalogFeatures(zero(features.items), replace(features.pairs, inputs=zero(features.pairs.inputs)),
                           replace(features.views, inputs=zero(features.views.inputs)), zero(features.queries),
                           features.query_target)


def train_tokenizer(catalog: Catalog, method: str, registry: Path, cache: Path, sizes: tuple[int, ...] | None = None,
                    seed: int = 0, preset: str = "small", progress: bool = True,
                    without: str | None = None) -> tuple[Path, dict]:
    """Fit, measure and publish one tokenizer (optionally without business or category
    features, published as `tokenizer-<method>-no-<feature>-<catalog>`); return its registry
    version and metrics."""
    t0 = time.perf_counter()
    rec = recipe(preset)
    encoder_version, features = ensure_features(catalog, registry, cache, rec.align, progress)
    features = ablate(features, without)
    sizes = tuple(sizes or rec.sizes or default_sizes(len(catalog.items), method))
    tok = make_tokenizer(method, sizes, seed, rec.options(method))
    t_fit = time.perf_counter()
    log = tok.fit(features.items, features.pairs, progress=progress)
    fit_s = time.perf_counter() - t_fit
    sids, metrics = measure(tok, catalog, features)
    metrics.update({"fit_seconds": round(fit_s, 1), "total_seconds": round(time.perf_counter() - t0, 1)})
    if "restarts" in log:
        metrics["dead_code_restarts"] = int(log["restarts"])
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        files = save_tokenizer(tok, work)
        write_item_sids(catalog.items["item_id"], sids, work / ITEM_SIDS, tok.quantized(features.items))
        files[ITEM_SIDS] = work / ITEM_SIDS
        config = {"kind": "tokenizer", "tokenizer": tok.config(), "catalog": catalog.name,
                  "catalog_fingerprint": catalog_fingerprint(catalog), "encoder": str(encoder_version)}
        config["without"] = without
        tag = f"{method}-no-{without}" if without else method
        version = publish(registry, f"tokenizer-{tag}-{catalog.name}", files, config, metrics)
    return version, metrics


def cached_aligned_encoder(catalog: Catalog, registry: Path, cache: Path, preset: str = "small") -> ImageEncoder:
    """The catalog's aligned encoder, answering from the feature cache for the catalog views and
    test photos it already embedded (so evaluating it costs no second pass over the images)."""
    encoder_version, features = ensure_features(catalog, registry, cache, recipe(preset).align, progress=False)
    test = catalog.queries[catalog.queries["split"] == "test"]
    known = {str(p): v for p, v in zip(catalog.item_images(), features.items.visual)}
    known.update({str(catalog.path(p)): v for p, v in zip(test["image"], features.queries.visual)})
    return PrecomputedEncoder(AlignedImageEncoder(AlignedEfficientNet.load(encoder_version)), known)
