"""What the quickstart runs on a real catalog (no synthetic world behind it): the catalog's
simulated shoppers, and a replayed log that leaves most fields unknown."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from onevision.catalog.format import empty_events, load_catalog, write_catalog
from serving.simulator import CatalogShoppers, ShopperWorld, load_shoppers
from streaming.replay import encode_events, load_events
from streaming.schema import parse_event


def _photo(root: Path, rel: str, item: int, colour: tuple[int, ...], shift: int) -> str:
    """A 64x64 photo of product `item`: its colour (lit by `shift`) and its own ellipse."""
    img = Image.new("RGB", (64, 64), tuple(c + shift for c in colour))
    ImageDraw.Draw(img).ellipse((8 + 4 * item, 8 + shift % 7, 40 + 3 * item, 56), fill=(255 - colour[0], 40 * item, 90))
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    img.save(root / rel)
    return rel


def grocery_like_catalog(root: Path) -> Path:
    """Like the Grocery Store import, in miniature: 6 items (one web photo each) in 3 categories,
    5 phone photos of each (3 train, 1 val, 1 test), all clicks by "anonymous", prices unknown
    (NaN), an empty event log."""
    rng = np.random.default_rng(0)
    items, queries = [], []
    for i in range(6):
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        items.append(dict(item_id=f"g{i:03d}", image=_photo(root, f"images/items/g{i:03d}.jpg", i, colour, 0),
                          category=f"c{i // 2}", title=f"Product {i}", price=np.nan))
        for k, split in enumerate(["train", "train", "train", "val", "test"]):
            image = _photo(root, f"images/queries/{split}/{i}-{k}.jpg", i, colour, 5 + 9 * k)
            queries.append(dict(query_id=f"{split}-{i}-{k}", image=image, user_id="anonymous",
                                target_item_id=f"g{i:03d}", kind="click", split=split))
    return write_catalog(root, pd.DataFrame(items), pd.DataFrame(queries), empty_events())


def test_catalog_shoppers_send_held_out_photos_and_click_only_what_the_photo_accepts(tmp_path):
    catalog = load_catalog(grocery_like_catalog(tmp_path / "grocery"))
    shoppers = load_shoppers(catalog)
    assert isinstance(shoppers, CatalogShoppers)
    assert len(shoppers.photos) == 6 and all("/test/" in str(path) for path, _ in shoppers.photos)
    assert shoppers.user_ids[0] == "anonymous" and len(shoppers.user_ids) == 8 and shoppers.n_synthetic == 7
    assert np.isnan(shoppers.price).all()
    rng = np.random.default_rng(0)
    accepted = shoppers.photos[0][1]
    others = np.setdiff1d(np.arange(6), accepted)
    top = bottom = clicks = orders = 0
    for _ in range(2000):
        p, user = shoppers.draw(rng)
        assert 0 <= p < 6 and 0 <= user < 8
        clicked, ordered = shoppers.react(rng, user, accepted, np.concatenate([others, accepted]))
        assert not clicked[:-1].any() and not (ordered & ~clicked).any()  # only the accepted item, last here
        c, o = shoppers.react(rng, user, accepted, np.repeat(accepted, 10))
        top, bottom, clicks, orders = top + c[0], bottom + c[-1], clicks + c.sum(), orders + o.sum()
    assert 0.75 < top / 2000 < 0.85 and top > 3 * bottom  # click_top at the top, position-biased below
    assert 0.25 < orders / clicks < 0.35  # a fixed share of clicks


def test_a_world_still_gets_the_world_shoppers(tiny_world):
    assert isinstance(load_shoppers(load_catalog(tiny_world)), ShopperWorld)


def test_a_log_without_positions_prices_or_request_ids_replays_as_valid_events(tmp_path):
    root = grocery_like_catalog(tmp_path / "team")
    pd.DataFrame({"type": ["click", "order", "click"], "ts": [1_700_000_002_000, 1_700_000_001_000, 1_700_000_003_000],
                  "user_id": ["u1", "u2", "u1"], "item_id": ["g000", "g001", "g002"]}).to_parquet(
        root / "events.parquet", index=False)
    events = load_events(root)
    assert events["ts"].is_monotonic_increasing
    parsed = [parse_event(raw) for raw in encode_events(events)]  # EventError if a worker would dead-letter it
    assert [e.type for e in parsed] == ["order", "click", "click"]
    assert all(e.position is None and e.price is None and e.request_id is None for e in parsed)
