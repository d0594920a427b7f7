"""Seeded synthetic traffic for tests and benchmarks: users who browse image-search result
pages (exposures), click some results and buy a few, against any item table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from onevision.items import ItemTable

EPOCH_MS = 1_767_225_600_000  # 2026-01-01


def synthetic_table(n_items: int = 500, levels: int = 5, codes: int = 8, dim: int = 16, seed: int = 0) -> ItemTable:
    rng = np.random.default_rng(seed)
    return ItemTable([f"i{i:06d}" for i in range(n_items)], rng.integers(0, codes, (n_items, levels)),
                     rng.normal(size=(n_items, dim)).astype(np.float32))


def synthetic_events(table: ItemTable, n_events: int, n_users: int = 500, page: int = 8, seed: int = 0,
                     start_ms: int = EPOCH_MS, spacing_ms: int = 20_000) -> pd.DataFrame:
    """About `n_events` schema-1 events in time order: pages of `page` exposures per request,
    then a click on ~1 in 4 pages and an order on ~1 in 3 clicked pages; some pages are in
    other scenes so the long-term SID sees more than image search."""
    rng = np.random.default_rng(seed)
    items = np.asarray(table.item_ids)
    rows = []
    ts = start_ms
    r = 0
    while len(rows) < n_events:
        user = f"u{rng.integers(n_users):05d}"
        scene = "image_search" if rng.random() < 0.7 else str(rng.choice(["search", "feed"]))
        rid = f"r{seed}-{r:08d}"
        shown = items[rng.choice(len(items), page, replace=False)]
        for pos, item in enumerate(shown):
            rows.append(("exposure", user, item, rid, scene, pos, ts + pos))
        if rng.random() < 0.25:
            pos = int(rng.integers(page))
            rows.append(("click", user, shown[pos], rid, scene, pos, ts + page + 1))
            if rng.random() < 0.33:
                rows.append(("order", user, shown[pos], rid, scene, pos, ts + page + 2))
        ts += int(rng.integers(1, spacing_ms))
        r += 1
    rows = rows[:n_events]
    df = pd.DataFrame(rows, columns=["type", "user_id", "item_id", "request_id", "scene", "position", "ts"])
    df.insert(0, "schema", 1)
    df.insert(1, "event_id", [f"e{seed}-{i:09d}" for i in range(len(df))])
    df["price"] = np.round(rng.uniform(5, 200, len(df)), 2)
    df["variant"], df["experiment"] = "synthetic", "synthetic"
    return df
