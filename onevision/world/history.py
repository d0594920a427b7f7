"""Shopping sessions, the event log they leave, and the shopper-photo queries.

A session shows a shopper one family of near-duplicates mixed with other items of a category
they like; the behaviour model decides clicks and orders. A query is an image-search session
that starts from a shopper photo of a product and ends in a click or an order on the variant
the shopper prefers, which is also logged as events (so features can be built from the events
that precede it, and nothing after).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from onevision.world.config import WorldConfig
from onevision.world.users import BehaviourModel, ItemArrays, Shoppers, choose, click_prob, order_prob, utility

DAY_MS = 86_400_000
SCENES: tuple[str, ...] = ("image_search", "search", "feed")
SCENE_P = (0.5, 0.3, 0.2)
HISTORY_EXPERIMENT = "history"
HISTORY_VARIANT = "logged"


@dataclass
class _Catalogue:
    """Index of families by category, for sampling what a session shows."""

    families_by_cat: dict[int, list[np.ndarray]]
    items_by_cat: dict[int, np.ndarray]
    family_of: np.ndarray

    @classmethod
    def build(cls, items: pd.DataFrame, arrays: ItemArrays) -> "_Catalogue":
        fams: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (fam, cat) in enumerate(zip(items["family_id"], arrays.category)):
            fams[int(cat)][fam].append(i)
        families_by_cat = {c: [np.array(v) for _, v in sorted(d.items())] for c, d in fams.items()}
        items_by_cat = {c: np.concatenate(v) for c, v in families_by_cat.items()}
        family_of = items["family_id"].str[1:].astype(int).to_numpy()
        return cls(families_by_cat, items_by_cat, family_of)


class _EventSink:
    """Accumulates event columns; one DataFrame at the end."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = defaultdict(list)

    def add(self, kind: str, ts: np.ndarray, user: str, items: np.ndarray, request_id: str, scene: str,
            positions: np.ndarray, prices: np.ndarray, item_ids: np.ndarray) -> None:
        n = len(items)
        if n == 0:
            return
        c = self.cols
        c["event_id"].extend(f"{request_id}-{kind[0]}{p}" for p in positions)
        c["type"].extend([kind] * n)
        c["ts"].extend(ts.tolist())
        c["user_id"].extend([user] * n)
        c["item_id"].extend(item_ids[items].tolist())
        c["request_id"].extend([request_id] * n)
        c["scene"].extend([scene] * n)
        c["position"].extend(positions.tolist())
        c["price"].extend(prices[items].tolist())

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.cols)
        df.insert(0, "schema", 1)
        df["variant"] = HISTORY_VARIANT
        df["experiment"] = HISTORY_EXPERIMENT
        df["ts"] = df["ts"].astype("int64")
        df["position"] = df["position"].astype("int32")
        return df.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)


class WorldSimulator:
    """Runs shoppers through sessions; deterministic for a given rng."""

    def __init__(self, cfg: WorldConfig, items: pd.DataFrame, shoppers: Shoppers, model: BehaviourModel | None = None):
        self.cfg = cfg
        self.items = items
        self.shoppers = shoppers
        self.model = model or BehaviourModel()
        self.arrays = ItemArrays.from_items(items)
        self.cat = _Catalogue.build(items, self.arrays)
        self.item_ids = items["item_id"].to_numpy()
        self.prices = self.arrays.price
        present = np.zeros(shoppers.category_pref.shape[1], dtype=bool)
        present[list(self.cat.families_by_cat)] = True
        pref = shoppers.category_pref * present
        self.cat_pref = pref / pref.sum(axis=1, keepdims=True)
        self.sink = _EventSink()

    def _pick_family(self, rng: np.random.Generator, user: int) -> tuple[int, np.ndarray]:
        c = int(rng.choice(len(self.cat_pref[user]), p=self.cat_pref[user]))
        fams = self.cat.families_by_cat[c]
        return c, fams[int(rng.integers(len(fams)))]

    def _shown(self, rng: np.random.Generator, c: int, family: np.ndarray) -> np.ndarray:
        others = np.setdiff1d(self.cat.items_by_cat[c], family)
        k = min(len(others), max(0, self.cfg.exposures_per_session - len(family)))
        shown = np.concatenate([family, rng.choice(others, k, replace=False)]) if k else family.copy()
        return rng.permutation(shown)

    def session(self, rng: np.random.Generator, user: int, start: int, request_id: str, scene: str,
                c: int, family: np.ndarray, target: int | None = None, kind: str | None = None) -> None:
        """Log one session; with `target`, the shopper clicks it (and orders it if kind == 'order')."""
        shown = self._shown(rng, c, family)
        pos = np.arange(len(shown))
        u = utility(self.model, self.shoppers, user, self.arrays, shown)
        clicked = rng.random(len(shown)) < click_prob(self.model, u, pos)
        ordered = clicked & (rng.random(len(shown)) < order_prob(self.model, u))
        if target is not None:
            is_t = shown == target
            clicked |= is_t
            ordered = (ordered & ~is_t) | (is_t & (kind == "order"))
        uid = f"u{user:06d}"
        add = self.sink.add
        add("exposure", start + pos * 500, uid, shown, request_id, scene, pos, self.prices, self.item_ids)
        add("click", start + 5_000 + pos[clicked] * 1_000, uid, shown[clicked], request_id, scene, pos[clicked],
            self.prices, self.item_ids)
        add("order", start + 60_000 + pos[ordered] * 1_000, uid, shown[ordered], request_id, scene, pos[ordered],
            self.prices, self.item_ids)

    def history(self, rng: np.random.Generator, progress: bool = False) -> None:
        cfg, sh = self.cfg, self.shoppers
        lam = cfg.sessions_per_user * sh.activity / sh.activity.mean()
        end, span = cfg.epoch_ms, cfg.history_days * DAY_MS
        k = 0
        for user in tqdm(range(sh.n), desc="shopping history", unit="user", disable=not progress):
            n = 1 + int(rng.poisson(lam[user]))
            for start in np.sort(rng.integers(end - span, end - 120_000, n)):
                c, family = self._pick_family(rng, user)
                scene = SCENES[int(rng.choice(3, p=SCENE_P))]
                self.session(rng, user, int(start), f"h{k:08d}", scene, c, family)
                k += 1

    def queries(self, rng: np.random.Generator, progress: bool = False) -> pd.DataFrame:
        cfg, sh = self.cfg, self.shoppers
        p_user = sh.activity / sh.activity.sum()
        end, span = cfg.epoch_ms, cfg.history_days * DAY_MS // 2
        rows = []
        for q in tqdm(range(cfg.n_queries), desc="shopper photos", unit="query", disable=not progress):
            user = int(rng.choice(sh.n, p=p_user))
            c, family = self._pick_family(rng, user)
            u = utility(self.model, sh, user, self.arrays, family)
            target = int(family[choose(rng, self.model, u)])
            kind = "order" if rng.random() < cfg.order_share else "click"
            photo_of = target
            if len(family) > 1 and rng.random() < cfg.other_variant_share:
                photo_of = int(rng.choice(family[family != target]))
            ts = int(rng.integers(end - span, end - 120_000))
            request_id = f"q{q:07d}"
            self.session(rng, user, ts, request_id, "image_search", c, family, target=target, kind=kind)
            split = ("train", "val", "test")[int(rng.choice(3, p=np.asarray(cfg.split) / sum(cfg.split)))]
            rows.append(dict(query_id=f"q{q:07d}", image=f"images/queries/q{q:07d}.jpg", user_id=f"u{user:06d}",
                             target_item_id=self.item_ids[target], kind=kind, split=split, ts=ts,
                             request_id=request_id, photo_item_id=self.item_ids[photo_of]))
        return pd.DataFrame(rows)

    def events(self) -> pd.DataFrame:
        return self.sink.frame()


def business_stats(events: pd.DataFrame, item_ids: pd.Series, now_ms: int, days: int = 30) -> pd.DataFrame:
    """clicks_30d, orders_30d, gmv_30d per item from the events in the window before `now_ms`."""
    recent = events[events["ts"] >= now_ms - days * DAY_MS]
    clicks = recent[recent["type"] == "click"].groupby("item_id").size()
    orders = recent[recent["type"] == "order"]
    out = pd.DataFrame(index=pd.Index(item_ids, name="item_id"))
    out["clicks_30d"] = clicks.reindex(out.index, fill_value=0).astype("int64")
    out["orders_30d"] = orders.groupby("item_id").size().reindex(out.index, fill_value=0).astype("int64")
    out["gmv_30d"] = orders.groupby("item_id")["price"].sum().reindex(out.index, fill_value=0.0).round(2)
    return out.reset_index()
