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

On a drifting world (`onevision.world.drift`, `--drift SCENARIO`) the shoppers follow the
scenario's schedule from the moment traffic starts (`ShopperWorld.start`): a trend's shoppers add
its boost to items of its colour, a price shock's and a launch's items are those of the catalog
version after the change (its prices, its launched items, photographed in a share of the searches
once the launch is out); `publish_drift` puts that catalog change on the catalog topic on time.

A real catalog has no such ground truth, so its shoppers (`CatalogShoppers`) are simpler, and
that is an assumption, not something learned from the data: the catalog's users (padded with a
few synthetic ones when it names fewer, e.g. only "anonymous") send its held-out (test, else val)
photos; a shopper clicks a shown item only when the photo accepts it (one of the query's
`target_item_ids`), with probability `click_top` at the top decayed by the world's position bias,
and orders a click with the fixed probability `order`; prices are the catalog's (null when
unknown). `load_shoppers` picks the world's shoppers on a world and these on anything else.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import requests

from onevision.world.drift import Drift
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
    drift: Drift | None = None
    after: ItemArrays | None = None  # the items after a drift's catalog change (the same rows, then launches)
    launch_photos: list = field(default_factory=list)  # (image path, row) of launched items
    trend: np.ndarray | None = None  # (U,) bool: the trend's shoppers
    trend_colour: int = -1  # index into the world's colours
    t0: float | None = None  # when the traffic started (`start`)
    catalog_out: bool | None = None  # the drift's catalog change published (None: nobody publishes it)

    @classmethod
    def load(cls, catalog, drift: Drift | None = None) -> "ShopperWorld":
        from onevision.world.products import COLOURS

        items, users, q = catalog.items, catalog.users, catalog.queries
        gap = world_gap(catalog)
        if gap is not None:
            raise ValueError(f"{catalog.root} is not a synthetic world (no {gap}): "
                             "the simulator needs the world's ground truth")
        test = q[q["split"] == "test"]
        before = after = ItemArrays.from_items(items)
        launch_photos: list = []
        if drift is not None and drift.changes_catalog():
            items, launch_photos, before, after = _changed_items(catalog, drift)
        row_of = {i: r for r, i in enumerate(items["item_id"])}
        photos = [(catalog.root / img, row_of[p]) for img, p in zip(test["image"], test["photo_item_id"])]
        trend = None
        if drift is not None and drift.scenario == "trend":
            trend = np.isin(users["user_id"].to_numpy(), drift.trend_users)
        world = cls(items["item_id"].to_numpy(), row_of, items["family_id"].to_numpy(), before,
                    Shoppers.from_frame(users), users["user_id"].to_numpy(), photos, drift=drift,
                    after=after if drift is not None and drift.changes_catalog() else None,
                    launch_photos=launch_photos, trend=trend,
                    trend_colour=COLOURS.index(drift.colour) if trend is not None else -1)
        return world

    def start(self) -> None:
        """The traffic starts now: a drift's schedule counts from here."""
        self.t0 = time.time()

    def strength(self) -> float:
        """How far the drift has come (0 before its start or without one, 1 at full strength)."""
        if self.drift is None or self.t0 is None:
            return 0.0
        return self.drift.strength(time.time() - self.t0)

    def catalog_changed(self) -> bool:
        """Whether the drift's catalog change is out: once published (`publish_drift` says so), or,
        with nobody publishing it, once the drift has started."""
        return self.catalog_out if self.catalog_out is not None else self.strength() > 0

    def items_now(self) -> ItemArrays:
        return self.after if self.after is not None and self.catalog_changed() else self.arrays

    @property
    def price(self) -> np.ndarray:
        return self.items_now().price

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(photo index, user row): a photo, and a user who would shop for its category. Once a
        launch is out, a share of the photos show launched items (indices past the base photos)."""
        p = int(rng.integers(len(self.photos)))
        out = self.launch_photos and self.catalog_changed()
        if out and rng.random() < self.drift.photo_share * self.strength():  # type: ignore[union-attr]
            p = len(self.photos) + int(rng.integers(len(self.launch_photos)))
        c = self.items_now().category[self.photo(p)[1]]
        w = self.shoppers.activity * self.shoppers.category_pref[:, c]
        return p, int(rng.choice(len(w), p=w / w.sum()))

    def photo(self, p: int) -> tuple:
        """(image path, photographed row) of photo `p` (launched ones after the base photos)."""
        return self.photos[p] if p < len(self.photos) else self.launch_photos[p - len(self.photos)]

    def utilities(self, user: int, photo_item: int, shown: np.ndarray, strength: float | None = None) -> np.ndarray:
        """The shopper's utility of each shown item row: their taste, the trend's boost when they
        follow it (at `strength`, default the drift's now) and how well the item matches the
        photographed product."""
        arrays = self.items_now()
        u = utility(self.model, self.shoppers, user, arrays, shown)
        if self.trend is not None and self.trend[user]:
            at = self.strength() if strength is None else strength
            u = u + self.drift.boost * at * (arrays.colour[shown] == self.trend_colour)  # type: ignore[union-attr]
        same_family = self.family[shown] == self.family[photo_item]
        same_cat = arrays.category[shown] == arrays.category[photo_item]
        return u + np.where(same_family, 0.0, np.where(same_cat, self.intent.other_family, self.intent.other_category))

    def react(self, rng: np.random.Generator, user: int, photo_item: int,
              shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clicked, ordered) masks over the shown item rows, in display order."""
        u = self.utilities(user, photo_item, shown)
        clicked = rng.random(len(shown)) < click_prob(self.model, u, np.arange(len(shown)))
        ordered = clicked & (rng.random(len(shown)) < order_prob(self.model, u))
        return clicked, ordered


def _changed_items(catalog, drift: Drift) -> tuple:
    """(items after a drift's catalog change, launched photos, item arrays before and after): the
    version after keeps the base rows in order and appends the launches."""
    from onevision.catalog.format import load_catalog

    changed = load_catalog(catalog.root / "drifts" / drift.catalog)
    items, n = changed.items, len(catalog.items)
    if items["item_id"].iloc[:n].tolist() != catalog.items["item_id"].tolist():
        raise ValueError(f"{changed.root} does not keep {catalog.root}'s items in order: build the drift again")
    old = items.copy()
    old.loc[: n - 1, "price"] = catalog.items["price"].to_numpy()
    q = changed.queries
    launched = q[q["target_item_id"].isin(items["item_id"].iloc[n:])]
    row = {i: r for r, i in enumerate(items["item_id"])}
    photos = [(changed.root / img, row[p]) for img, p in zip(launched["image"], launched["photo_item_id"])]
    return items, photos, ItemArrays.from_items(old), ItemArrays.from_items(items)


def publish_drift(settings, world_dir, world: ShopperWorld, registry,
                  model: str | None = None) -> threading.Timer | None:
    """The drift's catalog change (prices, launches) encoded now and published to the catalog topic
    `start_s` after the traffic's start (`world.start()` first), on a timer thread; the shoppers see
    the changed catalog once it is published, never before the service can. None when the scenario
    changes no catalog. A failed publish is logged and the shoppers stay in the old catalog. `model`:
    the served generator whose tokenizer encodes the launches (default the world's)."""
    drift = world.drift
    if drift is None or not drift.changes_catalog():
        return None
    from pathlib import Path

    from onevision.catalog.format import load_catalog
    from onevision.registry import load_version, resolve, resolve_ref
    from onevision.tokenizers.encode_items import NewItemEncoder, changes_between
    from serving.models import default_model
    from streaming.catalog_stream import send_changes
    from streaming.producer import kafka_producer, now_ms

    base = load_catalog(world_dir)
    generator = resolve(model or default_model(Path(world_dir)), registry)
    tokenizer = resolve_ref(load_version(generator)[1]["tokenizer"], generator)
    changes = changes_between(base, load_catalog(Path(world_dir) / "drifts" / drift.catalog), NewItemEncoder(tokenizer),
                              now_ms())
    world.catalog_out = False

    def publish() -> None:
        producer = kafka_producer(settings)
        try:
            send_changes(producer, settings, changes)
            world.catalog_out = True
            print(f"drift {drift.scenario}: {len(changes)} catalog changes published", flush=True)
        except Exception:  # noqa: BLE001 - reported; the run goes on without the change
            logging.getLogger(__name__).exception("drift %s: the catalog change was not published", drift.scenario)
        finally:
            producer.close()

    assert world.t0 is not None, "start the world first"
    timer = threading.Timer(max(0.0, world.t0 + drift.start_s - time.time()), publish)
    timer.daemon = True
    timer.start()
    return timer


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

    t0: float | None = None

    def start(self) -> None:
        self.t0 = time.time()

    def photo(self, p: int) -> tuple:
        return self.photos[p]

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


def load_shoppers(catalog, drift: Drift | None = None) -> ShopperWorld | CatalogShoppers:
    """The world's shoppers on a synthetic world (following `drift`), `CatalogShoppers` on any other catalog."""
    if world_gap(catalog) is None:
        return ShopperWorld.load(catalog, drift)
    if drift is not None:
        raise ValueError(f"{catalog.root} is not a synthetic world: a drift needs the world's shoppers")
    return CatalogShoppers.load(catalog)


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
    if world.t0 is None:
        world.start()  # a drift's schedule counts from the first search
    headers = {"X-API-Key": api_key} if api_key else {}
    n = max(1, int(rate * duration))

    def one(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        if stop.wait(max(0.0, start + i / rate - time.monotonic())):  # an open-loop schedule
            return
        p, user = world.draw(rng)
        path, photographed = world.photo(p)  # the world's item row; a catalog's accepted rows
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
        shown = np.array([world.row_of.get(h["item_id"], -1) for h in body["items"]], dtype=np.int64)
        known = shown >= 0  # an item the simulator's world does not hold (published by someone else) is not clicked
        shown = np.where(known, shown, 0)
        clicked, ordered = world.react(rng, user, photographed, shown) if len(shown) else (np.zeros(0, bool),) * 2
        clicked, ordered = clicked & known, ordered & known
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
