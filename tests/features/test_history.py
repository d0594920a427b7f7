"""Point-in-time item stats: the history's change rows joined by Feast equal a brute-force count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.history import stats_as_of
from onevision.catalog.item_stats import DAY_MS, STAT_COLUMNS, ItemStatsAsOf, query_times, stats_history

DAYS = 7  # a short window, so items' windows fill, drain and drop to zero inside the span
START = 20_000 * DAY_MS  # a UTC midnight (2024-10-04)
SPAN_DAYS = 20


def random_events(rng: np.random.Generator, item_ids: list[str], n: int = 2500) -> pd.DataFrame:
    """Clicks, orders and exposures; some at exact day boundaries or 1 ms before; some prices unknown;
    a few of an item the catalog does not list."""
    ts = START + rng.integers(0, SPAN_DAYS * DAY_MS, n)
    on_boundary = rng.random(n) < 0.15
    ts[on_boundary] = START + rng.integers(0, SPAN_DAYS + 1, on_boundary.sum()) * DAY_MS
    just_before = rng.random(n) < 0.05
    ts[just_before] = START + rng.integers(1, SPAN_DAYS + 1, just_before.sum()) * DAY_MS - 1
    price = rng.uniform(1, 50, n).round(2)
    price[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "type": rng.choice(["exposure", "click", "order"], n, p=[0.4, 0.4, 0.2]),
        "ts": ts.astype(np.int64),
        "item_id": rng.choice([*item_ids, "not-in-catalog"], n),
        "price": price,
    })


def brute_force(events: pd.DataFrame, item_ids: list[str], item_price: np.ndarray | None, times: np.ndarray,
                days: int = DAYS) -> np.ndarray:
    """(T, N, 3): per item and time, the clicks, orders and GMV of the events in
    [floor_day(t) - days, floor_day(t))."""
    out = np.zeros((len(times), len(item_ids), 3))
    catalog = dict(zip(item_ids, item_price)) if item_price is not None else {}
    for ti, t in enumerate(times):
        d = t // DAY_MS * DAY_MS
        for ii, item in enumerate(item_ids):
            e = events[(events["item_id"] == item) & (events["ts"] >= d - days * DAY_MS) & (events["ts"] < d)]
            orders = e[e["type"] == "order"]
            prices = orders["price"].fillna(catalog.get(item, np.nan))
            out[ti, ii] = [(e["type"] == "click").sum(), len(orders), prices.sum(skipna=False) if len(orders) else 0.0]
    return out


def ms(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy() // 1_000_000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(7)
    item_ids = [f"item-{i}" for i in range(24)]
    events = random_events(rng, item_ids[:-1])  # the last item has no events
    item_price = rng.uniform(1, 50, len(item_ids)).round(2)
    item_price[::3] = np.nan  # unknown both ways for these items' unpriced orders
    offsets = np.concatenate([
        rng.integers(-2 * DAY_MS, (SPAN_DAYS + DAYS + 3) * DAY_MS, 14),  # before, during, after every window
        np.array([0, 3, 9, 10, SPAN_DAYS, SPAN_DAYS + DAYS + 1]) * DAY_MS,  # exact boundaries
        np.array([4, 10, SPAN_DAYS + DAYS + 1]) * DAY_MS - 1,
    ])
    times = np.unique(START + offsets)
    history = stats_history(events, item_ids, item_price, days=DAYS)
    got = stats_as_of(history, item_ids, times, tmp_path_factory.mktemp("feast"))
    return {"events": events, "item_ids": item_ids, "item_price": item_price, "times": times,
            "history": history, "got": got, "tmp": tmp_path_factory}


def test_feast_join_equals_brute_force(world):
    got, want = world["got"], brute_force(world["events"], world["item_ids"], world["item_price"], world["times"])
    assert list(got.item_ids) == world["item_ids"] and (got.times == world["times"]).all()
    assert got.stats.shape == want.shape
    np.testing.assert_allclose(got.stats, want, rtol=0, atol=1e-9)  # NaN where NaN
    assert (want[..., 0] > 0).any() and (want[..., 1] > 0).any()


def test_gmv_is_nan_only_where_an_unknown_price_order_is_in_the_window(world):
    events, item_ids, got = world["events"], world["item_ids"], world["got"]
    price = events["price"].fillna(events["item_id"].map(dict(zip(item_ids, world["item_price"]))))
    unknown = events[(events["type"] == "order") & price.isna()]
    expected = np.zeros(got.stats.shape[:2], dtype=bool)
    for ti, t in enumerate(got.times):
        d = t // DAY_MS * DAY_MS
        inside = unknown[(unknown["ts"] >= d - DAYS * DAY_MS) & (unknown["ts"] < d)]
        expected[ti] = np.isin(item_ids, inside["item_id"])
    assert expected.any() and (~expected & (got.stats[..., 1] > 0)).any()
    assert (np.isnan(got.stats[..., 2]) == expected).all()
    assert not np.isnan(got.stats[..., :2]).any()


def test_an_item_with_no_events_is_zeros(world):
    got = world["got"]
    assert world["item_ids"][-1] not in set(world["history"]["item_id"])
    assert (got.stats[:, -1] == 0).all()
    assert (got.stats[got.times < START] == 0).all()  # nobody has history before the first event


def test_events_at_or_after_a_time_change_nothing_at_that_time(world):
    rng = np.random.default_rng(11)
    t = int(START + 9 * DAY_MS + 5 * 3_600_000)
    floor = t // DAY_MS * DAY_MS
    later = random_events(rng, world["item_ids"], n=400)
    later["ts"] = floor + rng.integers(0, 12 * DAY_MS, len(later))  # from the floor-day of t on
    later.loc[later.index[:40], "ts"] = floor  # exactly at the boundary: not before it
    more = pd.concat([world["events"], later], ignore_index=True)
    history = stats_history(more, world["item_ids"], world["item_price"], days=DAYS)
    before = world["history"][ms(world["history"]["event_timestamp"]) <= t]
    pd.testing.assert_frame_equal(history[ms(history["event_timestamp"]) <= t].reset_index(drop=True),
                                  before.reset_index(drop=True))
    times = np.array([t, t + 2 * DAY_MS])
    got = stats_as_of(history, world["item_ids"], times, world["tmp"].mktemp("feast-later"))
    np.testing.assert_array_equal(got.at(t), world["got"].at(t))
    old = brute_force(world["events"], world["item_ids"], world["item_price"], times[1:])[0]
    assert not np.array_equal(got.stats[1], old, equal_nan=True)  # they do count once they are before


def test_history_rows_are_the_changes_with_the_drop_to_zero():
    events = pd.DataFrame({
        "type": ["click", "order", "exposure", "click"],
        "ts": [2 * DAY_MS, 2 * DAY_MS + 5, 3 * DAY_MS - 1, 20 * DAY_MS],  # a click exactly on boundary 2
        "item_id": ["a", "a", "a", "b"],
        "price": [np.nan, np.nan, 3.0, np.nan],
    })
    h = stats_history(events, ["b", "a"], item_price=np.array([1.0, 4.5]), days=3)
    assert list(h.columns) == ["item_id", "event_timestamp", *STAT_COLUMNS]
    assert h.dtypes[list(STAT_COLUMNS)].tolist() == [np.int64, np.int64, np.float64]
    assert str(h["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    rows = [(r.item_id, int(ms(pd.Series([r.event_timestamp]))[0] // DAY_MS), r.clicks_30d, r.orders_30d,
             r.gmv_30d) for r in h.itertuples()]
    # counts from the boundary after the event (3) until the window has passed (3 + 3): then 0
    assert rows == [("b", 21, 1, 0, 0.0), ("b", 24, 0, 0, 0.0), ("a", 3, 1, 1, 4.5), ("a", 6, 0, 0, 0.0)]
    unknown = stats_history(events, ["a"], item_price=np.array([np.nan]), days=3)
    assert np.isnan(unknown["gmv_30d"].iloc[0]) and unknown["gmv_30d"].iloc[1] == 0.0
    empty = stats_history(events[events["type"] == "exposure"], ["a"], days=3)
    assert len(empty) == 0 and list(empty.columns) == list(h.columns)


def test_stats_history_chunks_give_the_same_rows(monkeypatch):
    import onevision.catalog.item_stats as item_stats

    rng = np.random.default_rng(3)
    item_ids = [f"i{i}" for i in range(50)]
    events = random_events(rng, item_ids, n=3000)
    whole = stats_history(events, item_ids, days=DAYS)
    monkeypatch.setattr(item_stats, "_GRID_CELLS", 100)
    pd.testing.assert_frame_equal(stats_history(events, item_ids, days=DAYS), whole)


def test_query_times_floor_to_day_boundaries():
    ts = np.array([5 * DAY_MS + 7, 5 * DAY_MS, 2 * DAY_MS - 1, 9 * DAY_MS + DAY_MS - 1])
    assert query_times(ts).tolist() == [DAY_MS, 5 * DAY_MS, 9 * DAY_MS]


def test_item_stats_as_of_index_at_groups():
    stats = np.arange(2 * 3 * 3, dtype=np.float64).reshape(2, 3, 3)
    s = ItemStatsAsOf(item_ids=np.array(["a", "b", "c"]), times=np.array([10, 20]), stats=stats)
    assert s.index([5, 10, 15, 20, 99]).tolist() == [-1, 0, 0, 1, 1]
    assert (s.at(9) == 0).all() and s.at(9).shape == (3, 3)
    np.testing.assert_array_equal(s.at(10), stats[0])
    np.testing.assert_array_equal(s.at(25), stats[1])
    groups = s.groups(np.array([25, 5, 12, 20, 1, 10]))
    assert [g[0].tolist() for g in groups] == [[1, 4], [2, 5], [0, 3]]
    assert (groups[0][1] == 0).all()
    np.testing.assert_array_equal(groups[1][1], stats[0])
    np.testing.assert_array_equal(groups[2][1], stats[1])
    assert s.groups(np.array([], dtype=np.int64)) == []
    with pytest.raises(ValueError):
        ItemStatsAsOf(item_ids=np.array(["a"]), times=np.array([2, 1]), stats=np.zeros((2, 1, 3)))

    static = ItemStatsAsOf.static(stats[0], item_ids=["a", "b", "c"])
    assert static.index([-(2**62), 0, 2**62]).tolist() == [0, 0, 0]
    np.testing.assert_array_equal(static.at(-(2**62)), stats[0])
    assert [g[0].tolist() for g in static.groups([3, 1, 2])] == [[0, 1, 2]]
    assert list(ItemStatsAsOf.static(np.zeros((2, 3))).item_ids) == [0, 1]
