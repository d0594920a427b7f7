"""Point-in-time item business stats: clicks, orders and GMV over the `days` days before a time.

`stats_history` turns an event log into the stats' history: one row per item and UTC day
boundary where the item's 30-day stats change (drops back to zero included), the shape an
offline feature store joins "as of" a time. Stats only change at day boundaries, and the value
at a boundary counts the events strictly before it, so a feature read at time t never sees an
event at or after the floor-day of t: no leak from the period being evaluated.

`ItemStatsAsOf` is the dense result of such a join, (times x items x 3), with helpers to read
the snapshot valid at a time and to evaluate queries in groups that share a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
STAT_COLUMNS = ("clicks_30d", "orders_30d", "gmv_30d")
_TIME_MIN = np.iinfo(np.int64).min
_GRID_CELLS = 1_000_000  # items x boundaries per dense block in stats_history


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": pd.Series([], dtype=object),
        "event_timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
        "clicks_30d": pd.Series([], dtype="int64"),
        "orders_30d": pd.Series([], dtype="int64"),
        "gmv_30d": pd.Series([], dtype="float64"),
    })


def stats_history(events: pd.DataFrame, item_ids: Sequence[str], item_price: np.ndarray | None = None,
                  days: int = 30) -> pd.DataFrame:
    """The items' `days`-day stats at every UTC day boundary where they change.

    `events`: columns `type` (exposure/click/order), `ts` (int ms), `item_id`, `price` (float,
    NaN = unknown). The value at boundary d counts the clicks and orders with
    d - days*DAY <= ts < d. GMV sums each order's price, else the item's catalog price
    (`item_price[i]` for `item_ids[i]`, NaN = unknown); a window holding an order whose price
    is unknown both ways has gmv_30d NaN. Rows (`item_id`, `event_timestamp` UTC, the
    STAT_COLUMNS) run, per item, from the first boundary after its first event to the boundary
    where its last event leaves the window (stats back to zero); a row is emitted only where the
    stats differ from the previous boundary. Events of items not in `item_ids` are ignored.
    Sorted by `item_ids` order, then time.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    ids = np.asarray(item_ids, dtype=object)
    if item_price is not None and len(item_price) != len(ids):
        raise ValueError(f"item_price has {len(item_price)} entries for {len(ids)} items")
    pos = pd.Index(ids).get_indexer(events["item_id"].to_numpy()) if len(events) else np.zeros(0, np.int64)
    kind = events["type"].to_numpy()
    keep = (pos >= 0) & ((kind == "click") | (kind == "order"))
    if not keep.any():
        return _empty_history()
    item = pos[keep].astype(np.int64)
    is_order = kind[keep] == "order"
    day = np.floor_divide(events["ts"].to_numpy()[keep].astype(np.int64), DAY_MS)
    price = events["price"].to_numpy(dtype=np.float64)[keep]
    if item_price is not None:
        price = np.where(np.isnan(price), np.asarray(item_price, dtype=np.float64)[item], price)
    unknown = is_order & np.isnan(price)
    value = np.where(is_order & ~unknown, price, 0.0)

    used, col = np.unique(item, return_inverse=True)
    day0 = int(day.min())
    n_days = int(day.max()) - day0 + 1
    order = np.argsort(col, kind="stable")
    col, day = col[order], day[order] - day0
    weights = np.stack([~is_order, is_order, value, unknown]).astype(np.float64)[:, order]
    # items in chunks, so that a long span of days does not blow up the dense grids
    chunk = max(1, _GRID_CELLS // (n_days + 2 * days))
    cuts = np.searchsorted(col, np.arange(0, len(used) + chunk, chunk))
    parts = []
    for c0, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        if hi > lo:
            rows_i, rows_b, snap = _changes(col[lo:hi] - c0 * chunk, day[lo:hi], weights[:, lo:hi], n_days, days)
            parts.append((rows_i + c0 * chunk, rows_b, snap))
    rows_i = np.concatenate([p[0] for p in parts])
    rows_b = np.concatenate([p[1] for p in parts])
    snap = np.concatenate([p[2] for p in parts])
    bound_ms = (day0 + 1 + rows_b).astype(np.int64) * DAY_MS
    out = pd.DataFrame({
        "item_id": ids[used[rows_i]],
        "event_timestamp": pd.to_datetime(bound_ms, unit="ms", utc=True),
        "clicks_30d": np.rint(snap[:, 0]).astype(np.int64),
        "orders_30d": np.rint(snap[:, 1]).astype(np.int64),
        "gmv_30d": snap[:, 2],
    })
    return out.reset_index(drop=True)


def _changes(col: np.ndarray, day: np.ndarray, weights: np.ndarray, n_days: int,
             days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item, boundary, (clicks, orders, gmv)) where an item's window stats change.

    `col`: item positions (0..n-1, sorted), `day`: event days from 0 .. n_days-1, `weights`:
    (click, order, known-price value, unknown-price order) per event. An event on day k counts
    at boundaries k+1 .. k+days; boundary b here is day b+1, the last (n_days+days-1) the one
    where the last event's window has ended."""
    n = int(col[-1]) + 1
    n_bounds = n_days + days
    daily = np.zeros((4, n, n_days + 2 * days), dtype=np.float64)  # days of zeros on both sides
    cell = col * (n_days + 2 * days) + day + days
    for w in range(4):
        daily[w].reshape(-1)[:] = np.bincount(cell, weights=weights[w], minlength=daily[w].size)
    # window[b] sums days b-days+1 .. b newest first: the same nonzero values in the same order
    # make equal windows bit-equal and empty ones exactly 0 (no running-sum residue).
    window = np.zeros((4, n, n_bounds), dtype=np.float64)
    for j in range(days):
        window += daily[:, :, days - j:days - j + n_bounds]
    clicks, orders, gmv, unknown = window
    stats = np.stack([clicks, orders, np.where(unknown > 0, np.nan, gmv)], axis=-1)  # (n, bounds, 3)
    prev = np.concatenate([np.zeros((n, 1, 3)), stats[:, :-1]], axis=1)  # zeros before the first
    same = (stats == prev) | (np.isnan(stats) & np.isnan(prev))
    rows_i, rows_b = np.nonzero(~same.all(axis=-1))
    return rows_i, rows_b, stats[rows_i, rows_b]


def query_times(ts_ms: np.ndarray | Sequence[int]) -> np.ndarray:
    """The UTC day boundaries at or before each of `ts_ms`, unique and sorted: the only times the
    stats at those times can differ, so a join at these times covers every query."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    return np.unique(np.floor_divide(ts, DAY_MS) * DAY_MS)


@dataclass
class ItemStatsAsOf:
    """The items' stats as of each of `times`: `stats[t, i]` holds STAT_COLUMNS of `item_ids[i]`,
    valid from `times[t]` (int ms, ascending) until the next time."""

    item_ids: np.ndarray  # (N,)
    times: np.ndarray  # (T,) int64 ms, ascending
    stats: np.ndarray  # (T, N, 3) float64

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids)
        self.times = np.asarray(self.times, dtype=np.int64)
        self.stats = np.asarray(self.stats, dtype=np.float64)
        t, n = len(self.times), len(self.item_ids)
        if self.stats.shape != (t, n, len(STAT_COLUMNS)):
            raise ValueError(f"stats has shape {self.stats.shape}, expected {(t, n, len(STAT_COLUMNS))}")
        if t > 1 and not (np.diff(self.times) > 0).all():
            raise ValueError("times must be strictly ascending")

    @classmethod
    def static(cls, stats: np.ndarray, item_ids: np.ndarray | Sequence[str] | None = None) -> ItemStatsAsOf:
        """One snapshot valid from the beginning of time: for catalogs that give the stats as
        columns rather than as an event log. `item_ids` default to the positions."""
        s = np.asarray(stats, dtype=np.float64)
        ids = np.arange(len(s)) if item_ids is None else np.asarray(item_ids)
        return cls(item_ids=ids, times=np.array([_TIME_MIN], dtype=np.int64), stats=s[None])

    def index(self, ts: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """For each of `ts` (ms), the row of the latest time <= it; -1 before the first."""
        return np.searchsorted(self.times, np.asarray(ts, dtype=np.int64), side="right") - 1

    def at(self, ts: int) -> np.ndarray:
        """The (N, 3) stats as of `ts` (ms); zeros before the first time."""
        i = int(self.index(ts))
        return np.zeros((len(self.item_ids), len(STAT_COLUMNS))) if i < 0 else self.stats[i]

    def groups(self, ts: np.ndarray | Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`ts` split by the snapshot valid at each: [(positions in `ts`, (N, 3) stats)], in time
        order, positions ascending within a group."""
        idx = self.index(np.asarray(ts, dtype=np.int64).reshape(-1))
        order = np.argsort(idx, kind="stable")
        keys, starts = np.unique(idx[order], return_index=True)
        zeros = np.zeros((len(self.item_ids), len(STAT_COLUMNS)))
        return [(rows, zeros if k < 0 else self.stats[k])
                for k, rows in zip(keys.tolist(), np.split(order, starts[1:]))]

    def per_snapshot(self, ts: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
                     ) -> tuple[np.ndarray, ...]:
        """`fn(rows, (N, 3) stats)` for each group of `groups(ts)`, its arrays (one row per position of
        `rows`) put back in the order of `ts`: work that reads the stats known at each time."""
        out: tuple[np.ndarray, ...] = ()
        for rows, snapshot in self.groups(ts):
            parts = fn(rows, snapshot)
            if not out:
                out = tuple(np.empty((len(ts), *p.shape[1:]), p.dtype) for p in parts)
            for whole, part in zip(out, parts):
                whole[rows] = part
        return out
