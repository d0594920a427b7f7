"""Image search end to end, the unit serving hosts: photo bytes and the user's features in,
ranked catalog items out.

Photo -> safe decode (`images.load_rgb`: a non-image, truncated file or decompression bomb is
an `ImageError` with the reason) -> V's visual tokens and the photo's own SID -> prompt with the
scene and the user's
long- and short-term SIDs (missing = cold start) -> constrained beam search -> items by S_conv
-> low-confidence flag.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from onevision.behaviour.short_term import SHORT_LEN
from onevision.catalog.changes import Expect, ItemState
from onevision.catalog.served import ServedItems
from onevision.device import resolve_device
from onevision.encoders.aligned import AlignedEfficientNet
from onevision.encoders.visual_tokens import VisualTokens, encode_images
from onevision.generator.model import OneVisionGenerator
from onevision.generator.prompt.builder import PromptInputs, Prompts, build_prompts
from onevision.generator.prompt.image_sids import ImageSIDs
from onevision.generator.prompt.sid_content import SIDContent
from onevision.generator.rank.searcher import GenerativeSearcher, SearchCatalog, SearchConfig
from onevision.generator.rank.title_lift import TitleLift
from onevision.generator.sid_items import SIDItems
from onevision.images import load_rgb
from onevision.items import parse_sid
from onevision.registry import version_name


@dataclass
class Hit:
    item_id: str
    sid: list[int]
    score: float  # log-probability of the item's SID


@dataclass
class SearchAnswer:
    hits: list[Hit]
    low_confidence: bool
    similarity: float
    visual: VisualTokens | None = None  # the photo's V tokens (grid (T, 320), embedding (D,))


@dataclass(frozen=True)
class ServedCatalog:
    """What one catalog version gives the model: the items and everything built from them (the
    searcher's trie, SID groups, ANN index, S_conv, prices and categories; the photo's SID hints;
    the SIDs' content). Swapped as one: a search reads one of these from start to end."""

    items: ServedItems
    searcher: GenerativeSearcher
    image_sids: ImageSIDs
    content: SIDContent


class ImageSearch:
    def __init__(self, encoder: AlignedEfficientNet, model: OneVisionGenerator, items: ServedItems,
                 image_sids: ImageSIDs, config: SearchConfig = SearchConfig(), tokenizer: str = "",
                 lift: TitleLift | None = None):
        """`image_sids`: how photos get their SID hints (its items are replaced by `items`);
        `tokenizer`: the version (`model/vNNNN`) that gave the items' SIDs, which catalog changes
        must be encoded with; `lift`: the version's learned word bonuses (`rank.title_lift`), applied
        to every catalog version's titles."""
        self.encoder, self.model, self.config, self.tokenizer = encoder.eval(), model, config, tokenizer
        self.lift = lift
        self.tokens = model.tokens
        self.live_s_conv: dict[str, float] = {}
        self._lock = threading.Lock()  # catalog changes and live S_conv: one rebuild at a time
        self.served = self._build(items, image_sids)

    def _build(self, items: ServedItems, image_sids: ImageSIDs) -> ServedCatalog:
        from onevision.generator.rank.category_affinity import category_index
        from onevision.generator.rank.price_affinity import relative_price
        from onevision.generator.sid_items import s_conv

        frame = items.frame
        lift = self.lift.item_bonus(frame["title"]) if self.lift is not None and "title" in frame else None
        searcher = GenerativeSearcher(self.model, SearchCatalog(items.sids, s_conv(frame), items.embedding,
                                                                relative_price(frame), category_index(frame), lift),
                                      self.config)
        if self.live_s_conv:
            searcher.items = SIDItems.build_live(searcher.item_sids, items.item_ids, searcher.s_conv, self.live_s_conv)
        # the searcher's index holds the items' one copy of the embeddings; the hints search it too
        items = replace(items, embedding=searcher.item_embedding)
        return ServedCatalog(items, searcher, image_sids.with_items(frame["category"], searcher.index, items.sids),
                             SIDContent(searcher.items, searcher.item_embedding))

    @property
    def searcher(self) -> GenerativeSearcher:
        return self.served.searcher

    @property
    def item_ids(self) -> list[str]:
        return self.served.items.item_ids

    def expects(self) -> Expect:
        """What a catalog change's encoded fields must be for this model: its tokenizer's SIDs, V's width."""
        served = self.served
        return Expect(self.tokenizer or None, tuple(self.tokens.sizes), served.searcher.item_embedding.shape[1])

    def apply_changes(self, states: Mapping[str, ItemState]) -> dict[str, list[str]]:
        """Serve the items after these catalog changes (`catalog.changes.fold`): everything built
        from the items is rebuilt off the request path, then swapped in with one assignment (a
        search already running finishes on the old items). Returns what happened to each id."""
        with self._lock:
            items, report = self.served.items.apply(states)
            if any(report[k] for k in ("added", "updated", "removed")):
                self.served = self._build(items, self.served.image_sids)
        return report

    def use_s_conv(self, live: Mapping[str, float]) -> None:
        """Order items inside SIDs by the online store's S_conv (`live`: item id -> value; items it
        lacks keep the catalog's). One assignment: a batch already running keeps the old order."""
        with self._lock:
            self.live_s_conv = dict(live)
            s = self.served.searcher
            s.items = SIDItems.build_live(s.item_sids, self.served.items.item_ids, s.s_conv, self.live_s_conv)

    def encode(self, images: Sequence[bytes | str | Path | Image.Image]) -> VisualTokens:
        """V's visual tokens of the photos (decoded safely; PIL images as they are)."""
        return encode_images(self.encoder, [load_rgb(img) for img in images])

    def prompts(self, grid: np.ndarray, embedding: np.ndarray, users: Sequence[dict] | None = None,
                scene: str | Sequence[str] = "image_search", served: ServedCatalog | None = None) -> Prompts:
        """The generator's prompts from V's tokens (grid (B, T, 320), embedding (B, D)) and the
        users' features as the feature store returns them: 'short_sids' (newest first), 'long_sid'
        and 'recent_sids' (of the recent clicks and orders it aggregates, oldest first), empty or
        missing for a cold-start user; one scene or one per prompt.
        Serving and the streaming DPO job (which trains on the tokens and features serving logged)
        build them the same way. `served`: the catalog to read (default the current one)."""
        served = served or self.served
        n, levels = len(embedding), self.tokens.levels
        long_sid = np.full((n, levels), -1, np.int64)
        short = np.full((n, SHORT_LEN, levels), -1, np.int64)
        users = list(users or [{}] * n)
        recent = np.full((n, max((len(u.get("recent_sids") or ()) for u in users), default=0), levels), -1, np.int64)
        for r, user in enumerate(users):
            if user.get("long_sid"):
                long_sid[r] = parse_sid(user["long_sid"], levels)
            for j, sid in enumerate(list(user.get("short_sids") or [])[:SHORT_LEN]):
                short[r, j] = parse_sid(sid, levels)
            for j, sid in enumerate(user.get("recent_sids") or ()):
                recent[r, j] = parse_sid(sid, levels)
        for arr in (long_sid, short, recent):
            bad = (arr >= np.asarray(self.tokens.sizes)).any(-1)
            if bad.any():
                raise ValueError(f"a user SID has codes outside the codebook sizes {self.tokens.sizes}")
        hints, hint_sim = served.image_sids.encode_scored(embedding)
        scenes = self.tokens.scene_ids([scene] * n if isinstance(scene, str) else list(scene))
        inputs = PromptInputs(np.asarray(grid)[:, : self.tokens.n_visual - 1], embedding, scenes, long_sid, short,
                              image_sid=hints, hint_similarity=hint_sim, recent_sids=recent)
        return build_prompts(self.tokens, inputs, served.content)

    def search(self, images: Sequence[bytes | str | Path | Image.Image], users: Sequence[dict] | None = None,
               scene: str = "image_search", beam: int = 10, k: int = 10) -> list[SearchAnswer]:
        """One answer per image, each with the photo's visual tokens (what the DPO job learns from)."""
        served = self.served  # this search's catalog, whatever changes meanwhile
        vis = self.encode(images)
        res = served.searcher.search(self.prompts(vis.tokens, vis.embedding, users, scene, served), beam=beam, k=k)
        answers, sids, item_ids = [], served.searcher.item_sids, served.items.item_ids
        for r in range(len(images)):
            score_of = {tuple(s): float(v) for s, v in zip(res.sids[r].tolist(), res.scores[r]) if np.isfinite(v)}
            hits = [Hit(item_ids[i], sids[i].tolist(), score_of.get(tuple(sids[i].tolist()), float("nan")))
                    for i in res.items[r] if i >= 0]
            answers.append(SearchAnswer(hits, bool(res.low_confidence[r]), float(res.similarity[r]), vis.take(r)))
        return answers

    @classmethod
    def from_registry(cls, generator_version: Path, catalog, device: str | torch.device = "cpu") -> "ImageSearch":
        """The generator of a registry version with its tokenizer's items and encoder V, both on
        `device` (the ranking after the beam runs on the host)."""
        from safetensors.numpy import load_file

        from onevision.items import load_item_table
        from onevision.registry import load_version, resolve_ref

        manifest, config = load_version(generator_version)
        device = resolve_device(device)
        model = OneVisionGenerator.load(generator_version).to(device)
        tokenizer = resolve_ref(config["tokenizer"], generator_version)
        tok_config = load_version(tokenizer)[1]
        table = load_item_table(tokenizer, vectors=False)
        encoder = AlignedEfficientNet.load(resolve_ref(tok_config["encoder"], tokenizer)).to(device)
        items = catalog.items.set_index("item_id").loc[table.item_ids].reset_index()
        embedding = load_file(str(Path(generator_version) / "item_embedding.safetensors"))["embedding"]
        threshold = float(manifest["metrics"].get("confidence_threshold", 0.0))
        image_sids = ImageSIDs.from_version(tokenizer, items["category"], None,
                                            mode=config.get("image_sid", "tokenizer"), hints=model.tokens.n_hints)
        return cls(encoder, model, ServedItems.of(items, table.sids, embedding), image_sids,
                   SearchConfig(threshold=threshold), tokenizer=version_name(tokenizer),
                   lift=TitleLift.of_version(generator_version))
