"""The features role: behaviour events -> the Feast rows serving reads (short-term SIDs,
long-term SID, item 30-day stats), in group onevision-features, the hot path; the one role that
reports bad events to the dead-letter topic."""

from __future__ import annotations

from collections.abc import Callable

from features.redis_writer import queue_rows, sid_value, user_row
from infra.settings import Settings
from onevision.behaviour.long_term import long_sids
from onevision.items import ItemTable
from streaming.event_worker import EventWorker, Queue
from streaming.item_stats import ItemDeltas, ItemStatsStore
from streaming.schema import Event
from streaming.user_state import UserState
from streaming.worker_config import WorkerConfig


class FeatureWorker(EventWorker):
    role = "features"
    reports_invalid = True
    item_store: ItemStatsStore | None = None

    def __init__(self, settings: Settings, table: ItemTable, config: WorkerConfig | None = None):
        super().__init__(settings, table, config)
        t = self.table  # with the catalog changes read at start
        sid_bytes = {item: sid_value(t.sids[i]) for i, item in enumerate(t.item_ids)}
        self.item_store = ItemStatsStore(self.redis, self.ns, sid_bytes, self.config.item_stats)

    def table_changed(self, items: list[str]) -> None:
        t = self.table
        if self.item_store is not None:  # None while the worker starts (its table is read after)
            self.item_store.sid_bytes.update({i: sid_value(t.sids[t.index(i)]) for i in items})

    def _reset_batch(self) -> None:
        super()._reset_batch()
        self.items = ItemDeltas()

    def checkpoint(self, partition: int, e: Event) -> Callable[[], None]:
        return self.items.checkpoint(e.item_id, e.ts)

    def observe(self, partition: int, e: Event, user: UserState) -> None:
        if e.type == "click":
            self.items.add(e.item_id, e.ts, clicks=1)
        elif e.type == "order":
            self.items.add(e.item_id, e.ts, orders=1, gmv=e.price or 0.0)

    def role_writes(self, due: list) -> Queue:
        """The changed users' Feast rows and the item deltas into the transaction (the long-term
        fields only for users whose long-term actions changed)."""
        t = self.table
        users = sorted(self.short_dirty | self.long_dirty)
        changed_long = [u for u in users if u in self.long_dirty]
        long_of = dict(zip(changed_long, long_sids(t, [self.users[u].long for u in changed_long],
                                                   self.config.long_term)))
        rows = []
        for u in users:
            s = self.users[u]
            long = long_of.get(u)
            rows.append((u, user_row([t.sid(i) for _, i in s.short], long, s.last_ts,
                                     [t.sid(i) for _, i, _ in s.long] if long is not None else ())))
        items = self.items

        def queue(pipe) -> None:
            queue_rows(pipe, "user_id", rows)
            if len(items):
                self.item_store.queue(pipe, items)

        return queue
