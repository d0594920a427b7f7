"""Training and evaluation examples for the generator, built from a catalog and a tokenizer.

- `ImageBank`: V's visual tokens for every catalog image, item view and shopper photo (cached).
- pretrain: item images -> SID, image + title -> SID, image -> category, image + title -> category.
- SFT: train-split shopper photos and the items' other views -> the item's SID.
- personalized SFT: train-split shopper photos with the scene and the user's features at the
  request's time (`onevision.behaviour.backfill`, events strictly before it), plus OneSearch's sliding
  window over each user's image-search clicks (each click becomes a target whose context is
  the clicks before it, its photo one of the item's other views); some user slots are blanked
  so that cold-start users get sensible answers.
- DPO: train-split sessions that ended in an order (or, in a catalog without orders, a click):
  the chosen item against the session's clicked-not-bought and exposed-not-clicked items, with
  the request-time features; where a log has no exposures the stage adds negatives from the
  model's own beam (`training.dpo`).
Val and test sets are shopper photos of the matching split with request-time features.
User features read `onevision.catalog.history.training_events`: val/test sessions never feed one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from onevision.behaviour.backfill import UserContext, user_context
from onevision.behaviour.long_term import LONG_LEN
from onevision.behaviour.short_term import SHORT_LEN
from onevision.catalog.format import UNKNOWN_SCENE, Catalog, catalog_key
from onevision.catalog.history import training_events
from onevision.encoders.aligned import AlignedEfficientNet
from onevision.encoders.visual_tokens import VisualTokens, cached_tokens
from onevision.generator.prompt.builder import PromptInputs, Prompts, PromptTokens, build_prompts
from onevision.generator.prompt.image_sids import ImageSIDs
from onevision.generator.prompt.sid_content import SIDContent
from onevision.items import ItemTable, load_item_table
from onevision.metrics.retrieval import padded_targets

SID_TASK, CATEGORY_TASK = 0, 1


@dataclass
class ImageBank:
    tokens: VisualTokens
    row: dict[str, int]  # catalog-relative image path -> row
    sids: np.ndarray | None = None  # (N, H, L) the SIDs of each image (`generator.image_sid`)
    hint_similarity: np.ndarray | None = None  # (N, H) each image's cosine to its hint items
    content: SIDContent | None = None  # SID -> its items' V embedding, for the prompts' SID slots

    def rows(self, paths) -> np.ndarray:
        return np.array([self.row[p] for p in paths], dtype=np.int64)


def bank_paths(catalog: Catalog) -> list[str]:
    """The catalog-relative paths of every image the bank holds: item images, views, query photos."""
    items = catalog.items
    paths = list(items["image"])
    if "views" in items.columns:
        paths += [v for views in items["views"] if views is not None for v in views]
    return paths + list(catalog.queries["image"])


def weights_sha(encoder_version: Path) -> str:
    """The first 16 hex digits of the encoder weights' sha256: what every cache of V's outputs is keyed by."""
    from onevision.registry import load_version

    return load_version(encoder_version)[0]["files"]["encoder.safetensors"][:16]


def visual_cache(catalog: Catalog, encoder_version: Path, cache_root: Path) -> Path:
    """The bank's cache file (written by `image_bank` or by batch encoding)."""
    return Path(cache_root) / catalog_key(catalog) / f"visual-{weights_sha(encoder_version)}.safetensors"


def image_bank(catalog: Catalog, encoder_version: Path, cache_root: Path, progress: bool = True) -> ImageBank:
    """Visual tokens of all of the catalog's images, cached per (catalog, encoder weights)."""
    paths = bank_paths(catalog)
    cache = visual_cache(catalog, encoder_version, cache_root)
    model = AlignedEfficientNet.load(encoder_version)
    tokens = cached_tokens(model, [catalog.path(p) for p in paths], cache, progress=progress, keys=paths)
    return ImageBank(tokens, {p: i for i, p in enumerate(paths)})


@dataclass
class Examples:
    """N examples as arrays (one row each); -1 marks a missing SID, PAD a missing title word."""

    image: np.ndarray  # (N,) bank row
    scene: np.ndarray  # (N,) scene token id
    long_sid: np.ndarray  # (N, L)
    short_sids: np.ndarray  # (N, 5, L)
    title: np.ndarray  # (N, T)
    target: np.ndarray  # (N, L) SID codes of the wanted item
    category: np.ndarray  # (N,) category index (pretraining's category tasks)
    task: np.ndarray  # (N,) SID_TASK | CATEGORY_TASK
    target_item: np.ndarray  # (N,) item row (-1 when not one item)
    image_sid: np.ndarray  # (N, H, L) the input image's SIDs (-1 = left out)
    hint_similarity: np.ndarray  # (N, H) their cosines to the image (0 = left out)
    recent_sids: np.ndarray  # (N, 50, L) SIDs of the user's recent clicks and orders, oldest first (-1 rows pad)
    candidates: np.ndarray | None = None  # (N, C, L) DPO: the positive first, then negatives; -1 rows pad
    accepted: np.ndarray | None = None  # (N, M) item rows a hit may name (the target first; -1 pads)
    ts: np.ndarray | None = None  # (N,) request time (ms) of evaluated queries: item stats are taken then

    def __len__(self) -> int:
        return len(self.image)

    def take(self, idx) -> "Examples":
        return Examples(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])  # type: ignore[arg-type]
                           for f in fields(self)})

    @staticmethod
    def concat(parts: list["Examples"]) -> "Examples":
        return Examples(**{f.name: (None if any(getattr(p, f.name) is None for p in parts)  # type: ignore[arg-type]
                                    else np.concatenate([getattr(p, f.name) for p in parts]))
                           for f in fields(Examples)})

    @property
    def targets(self) -> np.ndarray:
        """(N, M) accepted item rows when known, else the target item (N,): what metrics score."""
        return self.accepted if self.accepted is not None else self.target_item

    def prompts(self, tokens: PromptTokens, bank: ImageBank, idx=slice(None)) -> Prompts:
        img = self.image[idx]
        inputs = PromptInputs(bank.tokens.tokens[img][:, : tokens.n_visual - 1], bank.tokens.embedding[img],
                              self.scene[idx], self.long_sid[idx], self.short_sids[idx], self.title[idx],
                              self.image_sid[idx], self.hint_similarity[idx], self.recent_sids[idx])
        return build_prompts(tokens, inputs, bank.content)


@dataclass
class GeneratorData:
    """Everything the stages and the offline evaluation need for one catalog + tokenizer."""

    catalog: Catalog
    tokens: PromptTokens
    bank: ImageBank
    table: ItemTable  # item ids, SIDs, quantized vectors (tokenizer version)
    item_category: np.ndarray  # (n_items,) category index
    image_sid: str = "tokenizer"  # how the prompt's image SIDs were made (generator.image_sid.MODES)
    _evaluations: dict = field(default_factory=dict, repr=False)  # split -> (examples, queries)

    @property
    def levels(self) -> int:
        return self.table.levels

    def _base(self, image_rows: np.ndarray, items: np.ndarray, scene: str = "image_search",
              context: UserContext | None = None, title: np.ndarray | None = None,
              task: int = SID_TASK, image_sid: bool = True) -> Examples:
        n, L, h = len(image_rows), self.levels, self.tokens.n_hints
        return Examples(
            image=image_rows, scene=self.tokens.scene_ids([scene] * n),
            long_sid=context.long_sid if context is not None else np.full((n, L), -1, np.int64),
            short_sids=context.short_sids if context is not None else np.full((n, SHORT_LEN, L), -1, np.int64),
            title=title if title is not None else np.zeros((n, self.tokens.title_len), np.int64),
            target=self.table.sids[items], category=self.item_category[items],
            task=np.full(n, task, np.int64), target_item=np.asarray(items, np.int64),
            image_sid=self.bank.sids[image_rows] if image_sid else np.full((n, h, L), -1, np.int64),  # type: ignore[index]
            hint_similarity=self.bank.hint_similarity[image_rows] if image_sid  # type: ignore[index]
            else np.zeros((n, h), np.float32),
            recent_sids=context.recent_sids if context is not None else np.full((n, LONG_LEN, L), -1, np.int64))

    # -- stage data -------------------------------------------------------------------
    def item_images(self) -> tuple[np.ndarray, np.ndarray]:
        """(bank rows, item rows) of every catalog image and item view."""
        items = self.catalog.items
        rows = list(self.bank.rows(items["image"]))
        owner = list(range(len(items)))
        if "views" in items.columns:
            for k, views in enumerate(items["views"]):
                for v in views if views is not None else ():
                    rows.append(self.bank.row[v])
                    owner.append(k)
        return np.array(rows, np.int64), np.array(owner, np.int64)

    def pretrain(self, seed: int = 0) -> Examples:
        """Each image twice: once for its SID, once for its category; half of each with the title.
    The paper's four tasks read the image (and title) only, so the image-SID slot stays empty."""
        rng = np.random.default_rng(seed)
        rows, owner = self.item_images()
        titles = self.tokens.title_ids(list(self.catalog.items["title"]))[owner]
        parts = []
        for task in (SID_TASK, CATEGORY_TASK):
            with_title = rng.random(len(rows)) < 0.5
            parts.append(self._base(rows, owner, scene="unknown", title=np.where(with_title[:, None], titles, 0),
                                    task=task, image_sid=False))
        return Examples.concat(parts)

    def canary(self, n: int = 200, seed: int = 0) -> Examples:
        """A fixed, seeded sample of catalog images and item views -> their own item's SID: the
        easy queries any sound generator answers, so a broken one shows at once."""
        rows, owner = self.item_images()
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False))
        return self._base(rows[pick], owner[pick])

    def queries(self, split: str) -> pd.DataFrame:
        q = self.catalog.queries
        return q[q["split"] == split].reset_index(drop=True)

    def sft(self) -> Examples:
        """Train-split shopper photos and the items' other views -> the item's SID."""
        q = self.queries("train")
        photos = self._base(self.bank.rows(q["image"]), self.table.indices(q["target_item_id"]))
        rows, owner = self.item_images()
        views = self._base(rows, owner)
        return Examples.concat([photos, views])

    def context(self, q: pd.DataFrame) -> UserContext:
        """User features at each row's time from the log without held-out sessions."""
        return user_context(training_events(self.catalog), self.table, q["user_id"].to_numpy(), q["ts"].to_numpy())

    def accepted(self, q: pd.DataFrame) -> np.ndarray:
        """(Q, M) item rows each query accepts (`target_item_ids`, the target first), -1 pads."""
        return padded_targets(self.table.indices(pd.Series(t)) for t in q["target_item_ids"])

    def evaluation(self, split: str) -> tuple[Examples, pd.DataFrame]:
        """Shopper photos of `split` with request-time user features, and the query rows;
        built once per split (the user features are the slow part), so read-only."""
        if split not in self._evaluations:
            q = self.queries(split)
            ex = self._base(self.bank.rows(q["image"]), self.table.indices(q["target_item_id"]),
                            context=self.context(q))
            ex.accepted, ex.ts = self.accepted(q), q["ts"].to_numpy(np.int64)
            self._evaluations[split] = (ex, q)
        return self._evaluations[split]

    def personalized(self, seed: int = 0, max_window: int = 20_000, blank_share: float = 0.15) -> Examples:
        rng = np.random.default_rng(seed)
        photos, _ = self.evaluation("train")
        window = self.sliding_window(rng, max_window)
        out = Examples.concat([photos, window] if window is not None else [photos])
        blank = rng.random(len(out)) < blank_share
        out.long_sid[blank] = -1
        out.short_sids[blank] = -1
        out.recent_sids[blank] = -1
        return out

    def sliding_window(self, rng: np.random.Generator, limit: int) -> Examples | None:
        """OneSearch's sliding window over each user's image-search clicks: every click is a
        target with the clicks before it as its short-term context (the first with none).
        Clicks of val/test requests are never targets; a log without scenes counts every click."""
        ev = training_events(self.catalog)
        clicks = ev[(ev["type"] == "click") & ev["scene"].isin(("image_search", UNKNOWN_SCENE))]
        clicks = clicks[self.table.indices(clicks["item_id"]) >= 0]
        if clicks.empty:
            return None
        if len(clicks) > limit:
            clicks = clicks.iloc[np.sort(rng.choice(len(clicks), limit, replace=False))]
        items = self.table.indices(clicks["item_id"])
        rows, owner = self.item_images()
        views_of = pd.Series(np.arange(len(rows))).groupby(owner).apply(np.asarray)
        photo = np.array([rows[rng.choice(views_of[i])] for i in items], np.int64)
        return self._base(photo, items, context=self.context(clicks))

    def dpo_positives(self) -> tuple[pd.DataFrame, str]:
        """The train queries DPO prefers: those that ended in an order, or, in a catalog without
        train orders, the clicks (and which kind it took)."""
        q = self.queries("train")
        kind = "order" if (q["kind"] == "order").any() else "click"
        return q[q["kind"] == kind].reset_index(drop=True), kind

    def dpo(self, max_negatives: int = 8) -> Examples:
        """Train-split sessions with an order (else a click): positive = the chosen item, negatives =
        clicked-not-bought first, then exposed-not-clicked; rows without a logged negative keep
        -1 rows (`training.dpo` fills them from the model's beam)."""
        q, _ = self.dpo_positives()
        ev = self.catalog.events
        ev = ev[ev["request_id"].isin(set(q["request_id"]))]
        by_req = {r: g for r, g in ev.groupby("request_id", sort=False)}
        base = self._base(self.bank.rows(q["image"]), self.table.indices(q["target_item_id"]), context=self.context(q))
        cands = np.full((len(q), 1 + max_negatives, self.levels), -1, np.int64)
        for r, (req, target, accepted) in enumerate(zip(q["request_id"], q["target_item_id"], q["target_item_ids"])):
            g = by_req.get(req)
            ordered = set(g.loc[g["type"] == "order", "item_id"]) if g is not None else set()
            clicked = set(g.loc[g["type"] == "click", "item_id"]) if g is not None else set()
            shown = list(dict.fromkeys(g.loc[g["type"] == "exposure", "item_id"])) if g is not None else []
            negs = [i for i in shown if i in clicked and i not in ordered] + [i for i in shown if i not in clicked]
            negs = [i for i in negs if i not in accepted][:max_negatives]
            cands[r, 0] = self.table.sids[self.table.index(target)]
            for j, item in enumerate(negs):
                cands[r, 1 + j] = self.table.sids[self.table.index(item)]
        base.candidates = cands
        base.accepted = self.accepted(q)
        return base


def load_generator_data(catalog: Catalog, tokenizer_version: Path, cache_root: Path, n_visual: int = 17,
                        progress: bool = True, image_sid: str = "tokenizer", hints: int = 1,
                        hint_similarity: bool = True, sid_content: bool = True) -> GeneratorData:
    from onevision.registry import load_version, resolve_ref

    _, config = load_version(tokenizer_version)
    table = load_item_table(tokenizer_version)
    if list(table.item_ids) != list(catalog.items["item_id"]):
        raise ValueError(f"{tokenizer_version} was trained on another catalog (item ids differ from {catalog.root})")
    bank = image_bank(catalog, resolve_ref(config["encoder"], tokenizer_version), cache_root, progress)
    n_items = len(catalog.items)
    item_emb = bank.tokens.embedding[:n_items]  # the bank starts with the catalog images, in item order
    image_sids = ImageSIDs.from_version(tokenizer_version, catalog.items["category"], item_emb, mode=image_sid,
                                        hints=hints)
    if image_sid == "tokenizer":  # a catalog image's SID is its item's
        own, own_sim = table.sids[:, None], np.zeros((n_items, 1), np.float32)
    else:
        own, own_sim = image_sids.encode_scored(item_emb)
    others, others_sim = image_sids.encode_scored(bank.tokens.embedding[n_items:])
    bank.sids = np.concatenate([own[:, :hints], others])
    bank.hint_similarity = np.concatenate([own_sim[:, :hints], others_sim])
    sizes = config["tokenizer"]["sizes"]
    bank.content = SIDContent.from_item_sids(table.sids, item_emb)
    tokens = PromptTokens.from_catalog(sizes, catalog.items["category"], catalog.items["title"], n_visual=n_visual,
                                       n_hints=hints, hint_similarity=hint_similarity, sid_content=sid_content)
    return GeneratorData(catalog, tokens, bank, table, tokens.category_index(list(catalog.items["category"])),
                         image_sid)


def data_for_version(catalog: Catalog, version: Path, cache_root: Path, progress: bool = True) -> GeneratorData:
    """The data a published generator version reads: its tokenizer and its prompt options."""
    from onevision.registry import read_version, resolve_ref

    config = read_version(version)[1]  # only the config: whoever loads the weights checks the files
    tokens = PromptTokens.from_config(config["tokens"])
    return load_generator_data(catalog, resolve_ref(config["tokenizer"], version), cache_root, n_visual=tokens.n_visual,
                               progress=progress, image_sid=config.get("image_sid", "tokenizer"), hints=tokens.n_hints,
                               hint_similarity=tokens.hint_similarity, sid_content=tokens.sid_content)


def fingerprint(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12]
