"""The next version of a synthetic world's catalog: items launched, items removed, prices changed.

A shop's catalog moves after its model is trained. This writes what it moves to as a catalog
directory, so that `onevision catalog publish OLD NEW` can send the difference to the running
service: launched items come from the world's own product generator (new families on another
random stream: the same distribution, never in the training data) with their catalog photo, views
and a few shopper photos each (test-split queries, so a cold item's retrieval can be measured);
removed items take their queries with them; a price change moves a price by 15-45% up or down.
The base catalog is not modified, and the new one links to its images.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from onevision.catalog.format import load_catalog, write_catalog
from onevision.world.build import _render, _RenderTask
from onevision.world.config import WorldConfig
from onevision.world.products import build_products

_LAUNCHES = 6  # the random stream of launches (build.py's purposes are 0-5)


@dataclass(frozen=True)
class NextVersion:
    adds: int = 100
    removes: int = 10
    price_changes: int = 50
    photos_per_item: int = 2  # shopper photos of each launched item (test-split queries)
    seed: int = 1  # which next version: 1, 2, ... give different launches
    prices: dict[str, float] = field(default_factory=dict)  # item id -> a new price set here (beside the drawn ones)


def next_version(base: str | Path, out: str | Path, spec: NextVersion = NextVersion()) -> dict:
    """Write `base`'s next catalog version into `out`; returns the ids launched, removed and repriced."""
    base, out = Path(base), Path(out)
    info = json.loads((base / "catalog.json").read_text())
    world = info.get("world") or info.get("base_world")
    if world is None:
        raise ValueError(f"{base} is not a synthetic world (its catalog.json has no world config)")
    cfg = WorldConfig(**world)
    cat = load_catalog(base)
    rng = np.random.default_rng([cfg.seed, _LAUNCHES, spec.seed])
    items = cat.items.copy()
    if spec.removes + spec.price_changes > len(items):
        raise ValueError(f"{spec.removes} removals and {spec.price_changes} price changes need more than "
                         f"{len(items)} items")
    picked = rng.permutation(len(items))
    removed = items["item_id"].iloc[picked[:spec.removes]].tolist()
    repriced = items["item_id"].iloc[picked[spec.removes:spec.removes + spec.price_changes]].tolist()
    moved = items["item_id"].isin(repriced)
    factor = np.exp(rng.choice([-1.0, 1.0], moved.sum()) * rng.uniform(0.15, 0.45, moved.sum()))
    items.loc[moved, "price"] = (items.loc[moved, "price"] * factor).round(2).clip(lower=1.0)
    if spec.prices:
        unknown = set(spec.prices) - set(items["item_id"])
        if unknown:
            raise ValueError(f"new prices for items {base} does not have: {sorted(unknown)[:3]}")
        set_here = items["item_id"].isin(spec.prices)
        items.loc[set_here, "price"] = items.loc[set_here, "item_id"].map(spec.prices).astype(float)
        repriced += [i for i in spec.prices if i not in repriced]
    items = items[~items["item_id"].isin(removed)]

    launched = pd.DataFrame()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images" / "items").mkdir(parents=True)
    (tmp / "images" / "launches").mkdir(parents=True)
    gone = set(removed)
    queries = cat.queries[~cat.queries["target_item_id"].isin(gone)].copy()
    queries["target_item_ids"] = [[t for t in ts if t not in gone] for ts in queries["target_item_ids"]]
    if spec.adds:
        new, specs = build_products(cfg.model_copy(update={"n_items": spec.adds}), rng)
        first = 1 + max(int(i[1:]) for i in cat.items["item_id"] if i[1:].isdigit())
        new["item_id"] = [f"i{first + k:06d}" for k in range(len(new))]
        new["family_id"] = [f"l{spec.seed:02d}-{f}" for f in new["family_id"]]
        for col in ("clicks_30d", "orders_30d", "gmv_30d"):
            if col in items.columns:
                new[col] = 0
        new.insert(1, "image", [f"images/items/{i}/catalog.jpg" for i in new["item_id"]])
        new.insert(2, "views", [[f"images/items/{i}/view{k}.jpg" for k in range(1, cfg.n_views + 1)]
                                for i in new["item_id"]])
        users = cat.users["user_id"].to_numpy() if cat.users is not None and len(cat.users) else np.array(["u-x"])
        ts = int(cat.queries["ts"].max()) + 60_000 if len(cat.queries) else cfg.epoch_ms
        rows = []
        for k, item in enumerate(new["item_id"]):
            photos = []
            for j in range(spec.photos_per_item):
                q = f"launch{spec.seed:02d}-{k:05d}-{j}"
                rows.append(dict(query_id=q, image=f"images/launches/{q}.jpg", user_id=str(rng.choice(users)),
                                 target_item_id=item, kind="order", split="test", ts=ts, request_id=q,
                                 photo_item_id=item))
                photos.append((10_000_000 * spec.seed + 100 * k + j, f"images/launches/{q}.jpg"))
            _render((cfg, tmp, _RenderTask(len(cat.items) + 1000 * spec.seed + k, item, specs[k], tuple(photos))))
        launched = new
        queries = pd.concat([queries, pd.DataFrame(rows)], ignore_index=True)
        items = pd.concat([items, new[[c for c in new.columns if c in items.columns or c in ("views",)]]],
                          ignore_index=True)
    for item in items["item_id"]:
        link = tmp / "images" / "items" / item
        if not link.exists():
            os.symlink((base / "images" / "items" / item).resolve(), link)
    os.symlink((base / "images" / "queries").resolve(), tmp / "images" / "queries")
    for photo in sorted((base / "images" / "launches").glob("*")):  # an earlier version's launches (chained)
        os.symlink(photo.resolve(), tmp / "images" / "launches" / photo.name)
    write_catalog(tmp, items.reset_index(drop=True), queries.reset_index(drop=True), cat.events, cat.users,
                  meta={"source": "onevision world next-version", "base": str(base), "base_world": cfg.identity(),
                        "next_version": vars(spec)})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"added": launched["item_id"].tolist() if len(launched) else [], "removed": removed, "repriced": repriced}
