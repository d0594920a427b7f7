"""Traffic simulator: the world's shoppers search the HTTP API with photos and react to what
they are shown through the world's behaviour model; their clicks and orders go to Kafka, so the
feature workers update their SIDs and the next search is personalized live.

A request: a test-split shopper photo (never trained on) of item P, sent by a user drawn with
probability proportional to activity x their taste for P's category. The user's utility for a
shown item is the world's (`onevision.world.users.utility`: category, colour, brand, price,
quality) plus how well it matches what they photographed: 0 for P's family (the same product or
its colour/brand/price variants), `other_family` for another product of the category,
`other_category` otherwise. Clicks follow the world's position bias and click link, orders the
order link given a click; they are produced with the request id, position, variant and
experiment of the answer.

A real catalog has no such ground truth, so its shoppers (`CatalogShoppers`) are simpler, and
that is an assumption, not something learned from the data: the catalog's users (padded with a
few synthetic ones when it names fewer, e.g. only "anonymous") send its held-out (test, else val)
photos; a shopper clicks a shown item only when the photo accepts it (one of the query's
`target_item_ids`), with probability `click_top` at the top decayed by the world's position bias,
and orders a click with the fixed probability `order`; prices are the catalog's (null when
unknown). `load_shoppers` picks the world's shoppers on a world and these on anything else.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import requests

from onevision.world.users import BehaviourModel, ItemArrays, Shoppers, click_prob, order_prob, utility


@dataclass(frozen=True)
class Intent:
    """Utility added to a shown item by how well it matches the photographed product."""

    other_family: float = -2.5
    other_category: float = -5.0


@dataclass
class ShopperWorld:
    """The parts of a synthetic world the simulator reads."""

    item_ids: np.ndarray
    row_of: dict
    family: np.ndarray
    arrays: ItemArrays
    shoppers: Shoppers
    user_ids: np.ndarray
    photos: list  # (image path, photographed item row)
    model: BehaviourModel = field(default_factory=BehaviourModel)
    intent: Intent = field(default_factory=Intent)

    @classmethod
    def load(cls, catalog) -> "ShopperWorld":
        items, users, q = catalog.items, catalog.users, catalog.queries
        gap = world_gap(catalog)
        if gap is not None:
            raise ValueError(f"{catalog.root} is not a synthetic world (no {gap}): "
                             "the simulator needs the world's ground truth")
        row_of = {i: r for r, i in enumerate(items["item_id"])}
        test = q[q["split"] == "test"]
        photos = [(catalog.root / img, row_of[p]) for img, p in zip(test["image"], test["photo_item_id"])]
        return cls(items["item_id"].to_numpy(), row_of, items["family_id"].to_numpy(),
                   ItemArrays.from_items(items), Shoppers.from_frame(users), users["user_id"].to_numpy(), photos)

    @property
    def price(self) -> np.ndarray:
        return self.arrays.price

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(photo index, user row): a photo, and a user who would shop for its category."""
        p = int(rng.integers(len(self.photos)))
        c = self.arrays.category[self.photos[p][1]]
        w = self.shoppers.activity * self.shoppers.category_pref[:, c]
        return p, int(rng.choice(len(w), p=w / w.sum()))

    def react(self, rng: np.random.Generator, user: int, photo_item: int,
              shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clicked, ordered) masks over the shown item rows, in display order."""
        u = utility(self.model, self.shoppers, user, self.arrays, shown)
        same_family = self.family[shown] == self.family[photo_item]
        same_cat = self.arrays.category[shown] == self.arrays.category[photo_item]
        u = u + np.where(same_family, 0.0, np.where(same_cat, self.intent.other_family, self.intent.other_category))
        clicked = rng.random(len(shown)) < click_prob(self.model, u, np.arange(len(shown)))
        ordered = clicked & (rng.random(len(shown)) < order_prob(self.model, u))
        return clicked, ordered


def world_gap(catalog) -> str | None:
    """What of a synthetic world's ground truth a catalog lacks (None: it is a world)."""
    missing = {"family_id", "photo_item_id"} - set(catalog.items.columns) - set(catalog.queries.columns)
    if missing or catalog.users is None or "fav_colour" not in catalog.users.columns:
        return str(sorted(missing) or "user tastes")
    return None


@dataclass(frozen=True)
class CatalogBehaviour:
    """The assumed reactions of a real catalog's shoppers (module doc)."""

    click_top: float = 0.8  # P(click) of an accepted item shown first
    order: float = 0.3  # P(order | click)
    min_shoppers: int = 8  # synthetic users pad the catalog's up to this many


@dataclass
class CatalogShoppers:
    """Simulated shoppers on a real catalog: its users, its held-out photos and the items each accepts."""

    item_ids: np.ndarray
    row_of: dict
    price: np.ndarray  # NaN = unknown
    user_ids: np.ndarray
    photos: list  # (image path, rows of the items the photo accepts)
    n_synthetic: int = 0  # how many of user_ids are made up
    behaviour: CatalogBehaviour = field(default_factory=CatalogBehaviour)
    model: BehaviourModel = field(default_factory=BehaviourModel)  # its position bias

    @classmethod
    def load(cls, catalog, behaviour: CatalogBehaviour = CatalogBehaviour()) -> "CatalogShoppers":
        items, q, ev = catalog.items, catalog.queries, catalog.events
        row_of = {i: r for r, i in enumerate(items["item_id"])}
        held_out = q[q["split"] == "test"] if (q["split"] == "test").any() else q[q["split"] == "val"]
        if held_out.empty:
            raise ValueError(f"{catalog.root} has no test or val photos for simulated shoppers to send")
        photos = [(catalog.root / img, np.array([row_of[t] for t in targets], dtype=np.int64))
                  for img, targets in zip(held_out["image"], held_out["target_item_ids"])]
        known = [] if catalog.users is None else list(catalog.users["user_id"])
        users = sorted(set(map(str, known + list(q["user_id"]) + list(ev["user_id"]))))
        synthetic = [f"sim-{i:04d}" for i in range(behaviour.min_shoppers - len(users))]
        return cls(items["item_id"].to_numpy(), row_of, items["price"].to_numpy(np.float64),
                   np.array(users + synthetic), photos, len(synthetic), behaviour)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(photo index, user row), both uniform."""
        return int(rng.integers(len(self.photos))), int(rng.integers(len(self.user_ids)))

    def react(self, rng: np.random.Generator, user: int, accepted: np.ndarray,
              shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clicked, ordered) masks over the shown item rows, in display order."""
        p_click = self.behaviour.click_top * self.model.position_bias(np.arange(len(shown)))
        clicked = np.isin(shown, accepted) & (rng.random(len(shown)) < p_click)
        ordered = clicked & (rng.random(len(shown)) < self.behaviour.order)
        return clicked, ordered


def load_shoppers(catalog) -> ShopperWorld | CatalogShoppers:
    """The world's shoppers on a synthetic world, `CatalogShoppers` on any other catalog."""
    return ShopperWorld.load(catalog) if world_gap(catalog) is None else CatalogShoppers.load(catalog)


@dataclass
class TrafficStats:
    """Searches, clicks and orders per variant ('' = failed searches)."""

    by_variant: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, variant: str, clicks: int = 0, orders: int = 0) -> None:
        with self.lock:
            v = self.by_variant.setdefault(variant, {"requests": 0, "clicks": 0, "orders": 0})
            v["requests"] += 1
            v["clicks"] += clicks
            v["orders"] += orders

    def total(self, key: str) -> int:
        return sum(v[key] for v in self.by_variant.values())

    @property
    def requests(self) -> int:
        return self.total("requests")

    @property
    def errors(self) -> int:
        return self.by_variant.get("", {}).get("requests", 0)

    @property
    def clicks(self) -> int:
        return self.total("clicks")

    @property
    def orders(self) -> int:
        return self.total("orders")


def run_traffic(url: str, world: ShopperWorld | CatalogShoppers, producer, rate: float, duration: float, seed: int = 0,
                concurrency: int = 8, top_k: int = 10, progress=None, api_key: str | None = None) -> TrafficStats:
    """Send about `rate` searches a second for `duration` seconds; clicks and orders go to Kafka
    through `producer` (streaming.producer.EventProducer), a trusted producer. With the service's
    `api_key` the searches are a trusted load generator's, which the per-client rate limit spares
    (all the simulated shoppers come from one address)."""
    from streaming.producer import event

    stats, start, stop = TrafficStats(), time.monotonic(), threading.Event()
    headers = {"X-API-Key": api_key} if api_key else {}
    n = max(1, int(rate * duration))

    def one(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        if stop.wait(max(0.0, start + i / rate - time.monotonic())):  # an open-loop schedule
            return
        p, user = world.draw(rng)
        path, photographed = world.photos[p]  # the world's item row; a catalog's accepted rows
        user_id = str(world.user_ids[user])
        try:
            r = requests.post(f"{url}/v1/search", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                              data={"user_id": user_id, "top_k": str(top_k)}, headers=headers, timeout=60)
            body = r.json() if r.status_code == 200 else None
        except requests.RequestException:
            body = None
        if body is None:
            stats.add("")
            return
        shown = np.array([world.row_of[h["item_id"]] for h in body["items"]], dtype=np.int64)
        clicked, ordered = world.react(rng, user, photographed, shown) if len(shown) else (np.zeros(0, bool),) * 2
        common = dict(scene="image_search", request_id=body["request_id"], variant=body["variant"],
                      experiment=body["experiment"] or None)
        for kind, mask in (("click", clicked), ("order", ordered)):
            for pos in np.flatnonzero(mask):
                price = float(world.price[shown[pos]])
                producer.send(event(kind, user_id, str(world.item_ids[shown[pos]]), position=int(pos),
                                    price=None if np.isnan(price) else price, **common))
        stats.add(body["variant"], int(clicked.sum()), int(ordered.sum()))
        if progress:
            progress()

    with ThreadPoolExecutor(concurrency) as pool:
        try:
            list(pool.map(one, range(n)))
        except BaseException:  # Ctrl-C or TERM: the searches not yet due are not sent
            stop.set()
            raise
    producer.flush()
    return stats
