"""Point-in-time user features from an event log: what the streaming worker would have served
at each request time, computed in batch for training and offline evaluation.

Only events strictly before the request's time count (no leakage of the request's own clicks or
of anything later). Short-term = the items of the 5 latest image-search clicks, newest first;
long-term = `long_term.long_sids` over the latest 50 clicks and orders in every scene, and those
50 items' SIDs (`recent_sids`): the same modules and rules as the worker, so training sees the
features serving will read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from onevision.behaviour.long_term import CLICK, LONG_LEN, ORDER, LongTermConfig, long_sids
from onevision.behaviour.short_term import SHORT_LEN, SHORT_SCENES
from onevision.items import ItemTable, sid_string


@dataclass
class UserContext:
    short_items: np.ndarray  # (N, 5) item index into the table, -1 = none; newest first
    short_sids: np.ndarray  # (N, 5, L) SID codes, -1 rows = none
    long_sid: np.ndarray  # (N, L) SID codes, -1 row = cold start
    long_items: list[np.ndarray]  # the item indices the long-term SID aggregates, oldest first
    recent_sids: np.ndarray  # (N, 50, L) those items' SIDs, oldest first, -1 rows pad

    def features(self) -> list[dict]:
        """Each request's features as the feature store serves them (`features.client.user_features`):
        'short_sids' as "c1-c2-..." strings, newest first, 'long_sid' as codes (empty: none) and
        'recent_sids' as strings, oldest first: the SIDs of the items it aggregates."""
        return [{"long_sid": [int(c) for c in self.long_sid[r]] if self.long_sid[r, 0] >= 0 else [],
                 "short_sids": _sid_strings(self.short_sids[r]), "recent_sids": _sid_strings(self.recent_sids[r])}
                for r in range(len(self.long_sid))]

    def blank(self) -> "UserContext":
        """The same requests as a user with no history (cold start / personalization off)."""
        return UserContext(np.full_like(self.short_items, -1), np.full_like(self.short_sids, -1),
                           np.full_like(self.long_sid, -1), [np.zeros(0, np.int64) for _ in self.long_items],
                           np.full_like(self.recent_sids, -1))


def _sid_strings(sids: np.ndarray) -> list[str]:
    return [sid_string(s) for s in sids if s[0] >= 0]


def user_context(events: pd.DataFrame, table: ItemTable, user_ids, ts,
                 config: LongTermConfig = LongTermConfig()) -> UserContext:
    """Features of each (user_id, ts) request from the clicks and orders before ts."""
    user_ids, ts = np.asarray(user_ids), np.asarray(ts, dtype=np.int64)
    acts = events[events["type"].isin(["click", "order"])]
    item_idx = table.indices(acts["item_id"])
    acts = acts.loc[item_idx >= 0].assign(idx=item_idx[item_idx >= 0])
    acts = acts.sort_values("ts", kind="stable")
    by_user = {u: g for u, g in acts.groupby("user_id", sort=False)}
    n, levels = len(user_ids), table.levels
    short_items = np.full((n, SHORT_LEN), -1, dtype=np.int64)
    histories: list[list[tuple[int, str, int]]] = []
    long_items: list[np.ndarray] = []
    for r, (user, t) in enumerate(zip(user_ids, ts)):
        g = by_user.get(user)
        if g is None:
            histories.append([])
            long_items.append(np.zeros(0, np.int64))
            continue
        cut = int(np.searchsorted(g["ts"].to_numpy(), t, side="left"))
        before = g.iloc[:cut]
        clicks = before[(before["type"] == "click") & before["scene"].isin(SHORT_SCENES)]["idx"].to_numpy()
        clicks = clicks[::-1][:SHORT_LEN]
        short_items[r, : len(clicks)] = clicks
        recent = before.iloc[-LONG_LEN:]
        kinds = np.where(recent["type"].to_numpy() == "order", ORDER, CLICK)
        histories.append(list(zip(recent["ts"].tolist(), recent["item_id"].tolist(), kinds.tolist())))
        long_items.append(recent["idx"].to_numpy())
    long_sid = np.full((n, levels), -1, dtype=np.int64)
    for r, sid in enumerate(long_sids(table, histories, config)):
        if sid is not None:
            long_sid[r] = sid
    short_sids = np.where(short_items[..., None] >= 0, table.sids[np.maximum(short_items, 0)], -1)
    recent_sids = np.full((n, LONG_LEN, levels), -1, dtype=np.int64)
    for r, rows in enumerate(long_items):
        recent_sids[r, :len(rows)] = table.sids[rows]
    return UserContext(short_items, short_sids, long_sid, long_items, recent_sids)
