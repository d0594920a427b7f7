"""Long-term behaviour: one SID aggregated from the user's recent clicks and orders in every
scene.

- `mean` (default): a recency-weighted mean of the items' quantized vectors (orders weigh more
  than clicks; weight halves every `half_life_days` before the newest event), re-quantized to
  the nearest catalog SID. It moves smoothly with taste and is always a real SID.
- `onesearch`: OneSearch eq. 3, ceil(sum_j mu_j SID_j) with mu_j proportional to exp(sqrt(j))
  over the chronological sequence, then snapped level by level onto a valid SID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onevision.items import ItemTable, ItemTableError

DAY_MS = 86_400_000
LONG_LEN = 50  # recent clicks and orders kept for the long-term SID
CLICK, ORDER = 0, 1  # the kind of each kept action


@dataclass(frozen=True)
class LongTermConfig:
    mode: Literal["mean", "onesearch"] = "mean"
    half_life_days: float = 14.0
    click_weight: float = 1.0
    order_weight: float = 3.0
    max_events: int = LONG_LEN


def add_action(long: list[tuple[int, str, int]], ts: int, item_id: str, kind: int,
               size: int = LONG_LEN) -> None:
    long.append((ts, item_id, kind))
    if len(long) > size:
        del long[: len(long) - size]


def long_sids(table: ItemTable, histories: Sequence[Sequence[tuple[int, str, int]]],
              config: LongTermConfig = LongTermConfig()) -> list[list[int] | None]:
    """One SID per history (None for an empty one), computed for all of them at once."""
    out: list[list[int] | None] = [None] * len(histories)
    todo = [i for i, h in enumerate(histories) if h]
    if not todo:
        return out
    if config.mode == "onesearch":
        rows = [_eq3(table, histories[i]) for i in todo]
        sids = table.snap(np.stack(rows))
    else:
        if table.vectors is None:
            raise ItemTableError("the item table has no vectors; use the 'onesearch' long-term mode")
        means = np.stack([_weighted_mean(table, histories[i], config) for i in todo])
        sids = table.nearest_sids(means)
    for i, sid in zip(todo, sids):
        out[i] = sid.tolist()
    return out


def _weighted_mean(table: ItemTable, history, config: LongTermConfig) -> np.ndarray:
    ts = np.array([h[0] for h in history], dtype=np.float64)
    kind = np.array([h[2] for h in history])
    idx = np.array([table.index(h[1]) for h in history])
    age_days = (ts.max() - ts) / DAY_MS
    w = np.where(kind == ORDER, config.order_weight, config.click_weight) * 0.5 ** (age_days / config.half_life_days)
    assert table.vectors is not None  # checked by long_sids
    return (w[:, None] * table.vectors[idx]).sum(0) / w.sum()


def _eq3(table: ItemTable, history) -> np.ndarray:
    ordered = sorted(history, key=lambda h: h[0])  # stable: ties keep arrival order
    sids = np.stack([table.sids[table.index(h[1])] for h in ordered]).astype(np.float64)
    j = np.arange(1, len(ordered) + 1, dtype=np.float64)
    mu = np.exp(np.sqrt(j))
    mu /= mu.sum()
    return np.ceil((mu[:, None] * sids).sum(0) - 1e-9).astype(np.int64)
