"""Drifting worlds: a scenario is a schedule beside the world, never in its tables (the catalog and
its fingerprint are unchanged); the simulator follows it from the traffic's start."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from onevision.catalog.format import catalog_fingerprint, load_catalog
from onevision.world.drift import build_drift, drift_path, load_drift
from serving.simulator import ShopperWorld


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("drift") / "tiny"
    shutil.copytree(tiny_world, out)
    return out


def started(w: ShopperWorld, seconds: float) -> ShopperWorld:
    w.t0 = time.time() - seconds
    return w


def test_a_drift_leaves_the_world_and_its_fingerprint_as_they_were(world):
    before = catalog_fingerprint(load_catalog(world))
    files = {p: p.read_bytes() for p in world.glob("*.parquet")}
    for scenario in ("trend", "price-shock", "launches"):
        build_drift(world, scenario, adds=5)
    assert catalog_fingerprint(load_catalog(world)) == before
    assert all(p.read_bytes() == b for p, b in files.items())
    assert build_drift(world, "trend") == load_drift(world, "trend")  # deterministic by seed
    written = load_drift(world, "trend")
    drift_path(world, "trend").unlink()
    assert build_drift(world, "trend", write=False) == written and not drift_path(world, "trend").exists()
    build_drift(world, "trend")  # back, for the tests below
    with pytest.raises(ValueError, match="must be written"):
        build_drift(world, "launches", write=False)
    with pytest.raises(FileNotFoundError, match="--drift"):
        load_drift(world, "nothing")


def test_a_trend_raises_its_colour_for_its_shoppers_once_it_starts(world):
    drift = load_drift(world, "trend")
    cat = load_catalog(world)
    w = ShopperWorld.load(cat, drift)
    user = int(np.flatnonzero(w.trend)[0])
    other = int(np.flatnonzero(~w.trend)[0])
    assert 0.4 < w.trend.mean() < 0.8
    shown = np.arange(len(cat.items))
    coloured = w.arrays.colour == w.trend_colour
    assert coloured.any()
    rng = lambda: np.random.default_rng(0)  # noqa: E731 - the same draws each time
    clicks = {}
    for name, t in (("before", 0.0), ("after", drift.start_s + drift.ramp_s)):
        started(w, t)
        total = np.zeros(len(shown))
        for k in range(200):
            total += w.react(np.random.default_rng(k), user, 0, shown)[0]
        clicks[name] = total[coloured].mean()
        assert w.strength() == (0.0 if name == "before" else 1.0)
    assert clicks["after"] > 1.5 * clicks["before"]
    started(w, drift.start_s + drift.ramp_s)
    a = w.react(rng(), other, 0, shown)[0]
    started(w, 0.0)
    assert (a == w.react(rng(), other, 0, shown)[0]).all()  # shoppers outside the trend do not move


def test_a_price_shock_reprices_half_a_category_from_its_start(world):
    drift = load_drift(world, "price-shock")
    cat = load_catalog(world)
    items = cat.items.set_index("item_id")
    in_cat = (items["category"] == drift.category).sum()
    assert len(drift.repriced) == max(1, in_cat // 2)
    w = ShopperWorld.load(cat, drift)
    item = next(iter(drift.repriced))
    row = w.row_of[item]
    assert started(w, 0.0).price[row] == pytest.approx(items.at[item, "price"])
    assert started(w, drift.start_s + 1).price[row] == pytest.approx(drift.repriced[item])
    changed = load_catalog(world / "drifts" / drift.catalog)
    assert changed.items.set_index("item_id").at[item, "price"] == pytest.approx(drift.repriced[item])


def test_launched_items_are_photographed_only_once_they_are_out(world):
    drift = load_drift(world, "launches")
    w = ShopperWorld.load(load_catalog(world), drift)
    assert drift.adds == 5 and len(w.launch_photos) == 5 * 4 and len(w.item_ids) == 120 + 5
    rng = np.random.default_rng(0)
    started(w, 0.0)
    assert all(w.draw(rng)[0] < len(w.photos) for _ in range(200))
    started(w, drift.start_s + drift.ramp_s)
    drawn = [w.draw(rng)[0] for _ in range(400)]
    launched = np.mean([p >= len(w.photos) for p in drawn])
    assert 0.15 < launched < 0.45  # photo_share 0.3
    path, row = w.photo(max(drawn))
    assert path.is_file() and w.item_ids[row] not in set(load_catalog(world).items["item_id"])
