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
        missing = {"family_id", "photo_item_id"} - set(items.columns) - set(q.columns)
        if missing or users is None or "fav_colour" not in users.columns:
            raise ValueError(f"{catalog.root} is not a synthetic world (no {sorted(missing) or 'user tastes'}): "
                             "the simulator needs the world's ground truth")
        row_of = {i: r for r, i in enumerate(items["item_id"])}
        test = q[q["split"] == "test"]
        photos = [(catalog.root / img, row_of[p]) for img, p in zip(test["image"], test["photo_item_id"])]
        return cls(items["item_id"].to_numpy(), row_of, items["family_id"].to_numpy(),
                   ItemArrays.from_items(items), Shoppers.from_frame(users), users["user_id"].to_numpy(), photos)

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


def run_traffic(url: str, world: ShopperWorld, producer, rate: float, duration: float, seed: int = 0,
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
        path, photo_item = world.photos[p]
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
        clicked, ordered = world.react(rng, user, photo_item, shown) if len(shown) else (np.zeros(0, bool),) * 2
        common = dict(scene="image_search", request_id=body["request_id"], variant=body["variant"],
                      experiment=body["experiment"] or None)
        for kind, mask in (("click", clicked), ("order", ordered)):
            for pos in np.flatnonzero(mask):
                producer.send(event(kind, user_id, str(world.item_ids[shown[pos]]), position=int(pos),
                                    price=float(world.arrays.price[shown[pos]]), **common))
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
