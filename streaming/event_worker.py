"""What the feature and the session worker share: one consumer-group member on the events topic
that keeps per-user state and writes it, with its role's output, in one Redis MULTI per flush.

Delivery is at-least-once reading with effectively-once state:
- events are applied in memory in batches; one Redis MULTI per flush writes the role's output,
  the worker's per-user state and the next offset of every partition it applied, so state and
  offsets can never disagree;
- the Kafka commit follows the Redis write; on (re)assignment the worker seeks to the offsets
  stored in Redis, so a `kill -9` between the two replays nothing twice (and a partition with
  no stored offset is rebuilt from the start of the topic);
- a producer's duplicate (same event_id) is dropped by a per-user window of recent ids;
- bad events are set aside with their reason and the worker carries on;
- when Redis is down the flush is retried with back-off, nothing is committed meanwhile,
  and a retry first checks whether the lost reply's transaction did land.
"""

from __future__ import annotations

import abc
import gc
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import redis

from infra.settings import Settings
from onevision.behaviour.long_term import CLICK, ORDER, add_action
from onevision.behaviour.short_term import SCENE, add_click
from onevision.items import ItemTable
from streaming.consumer import ConsumerJob
from streaming.schema import DeadLetter, Event, EventError, parse_event
from streaming.user_state import UserState
from streaming.worker_config import ROLE_GROUPS, WorkerConfig, namespace

log = logging.getLogger(__name__)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
Queue = Callable[[redis.client.Pipeline], None]  # queues writes on a Redis transaction


def tune_gc() -> None:
    """The item table and caches are long-lived: keep the cyclic GC from re-walking them on every
    batch (it doubled the per-event cost). Process-wide, so called by the worker's run loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class EventWorker(ConsumerJob):
    """A role (`FeatureWorker`, `SessionWorker`) sets `role` and adds what only it does: `observe`
    (its part of one event), `role_writes` (its output at a flush), and optionally `due`,
    `flush_when_idle`, `assigned` and `revoked`."""

    role = ""
    offsets_home = "Redis"

    def __init__(self, settings: Settings, table: ItemTable, config: WorkerConfig | None = None):
        self.settings, self.table, self.config = settings, table, config or WorkerConfig()
        c = self.config
        if c.role not in ROLE_GROUPS:
            raise ValueError(f"worker role must be one of {tuple(ROLE_GROUPS)}, not {c.role!r}")
        if c.role != self.role:
            raise ValueError(f"a {type(self).__name__} has role {self.role!r}, not {c.role!r} "
                             "(streaming.worker.worker_for picks the class of a role)")
        c.group = c.group or ROLE_GROUPS[c.role]
        c.worker_id = c.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.ns = namespace(c.group)
        self.redis = redis.Redis.from_url(settings.redis.url, socket_timeout=10, socket_connect_timeout=2)
        self.users: dict[str, UserState] = {}
        self.next_offset: dict[int, int] = {}  # applied and stored
        self._reset_batch()
        self.stats = {"events": 0, "applied": 0, "dlq": 0, "duplicates": 0, "flushes": 0,
                      "redis_retries": 0, "sessions": 0}
        self.freshness: deque[float] = deque(maxlen=20_000)
        self._rate = deque(maxlen=20)  # (monotonic time, events) at recent flushes
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="redis-writer")
        self._inflight = None
        super().__init__(
            settings, settings.kafka.events_topic, c.group, max_poll_records=c.max_poll_records,
            fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
            receive_message_max_bytes=64 * 1024 * 1024,
            fetch_min_bytes=1, fetch_max_wait_ms=50, session_timeout_ms=c.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(c.kafka_session_timeout_ms // 4, 500))

    # ---- what a role adds ---------------------------------------------------------------------
    def observe(self, partition: int, e: Event, user: UserState) -> None:
        """The role's part of applying one new event, before the user's state takes it."""

    def due(self, close_sessions: bool) -> list:
        """Output the role owes at this flush even without new events (sessions that closed)."""
        return []

    @abc.abstractmethod
    def role_writes(self, due: list) -> Queue:
        """Send the role's Kafka output of the batch and return what it adds to the transaction."""

    def flush_when_idle(self) -> bool:
        """Flush on a poll without events too (sessions may time out)."""
        return False

    def assigned(self, partitions: list[int]) -> None:
        """Load the role's state of newly assigned partitions."""

    def revoked(self, partitions: list[int]) -> None:
        """Forget the role's state of partitions that moved away."""

    # ---- batch bookkeeping -------------------------------------------------------------------
    def _reset_batch(self) -> None:
        self.pending_offsets: dict[int, int] = {}
        self.dirty_users: set[str] = set()
        self.short_dirty: set[str] = set()
        self.long_dirty: set[str] = set()
        self.dead: list[DeadLetter] = []
        self.produced_at: list[int] = []  # Kafka timestamps of applied events (freshness)
        self.batch_events = 0
        self.batch_started: float | None = None

    # ---- rebalance ---------------------------------------------------------------------------
    def on_partitions_revoked(self, revoked):
        self.flush(close_sessions=False, wait=True)
        self.users.clear()
        for tp in revoked:
            self.next_offset.pop(tp.partition, None)
        self.revoked([tp.partition for tp in revoked])

    def on_partitions_assigned(self, assigned):
        self.users.clear()
        parts = [tp.partition for tp in assigned]
        raw = self._retry(lambda: self.redis.hmget(f"{self.ns}:offsets", [f"{self.topic}:{p}" for p in parts]))
        stored = {p: int(o) for p, o in zip(parts, raw) if o is not None}
        self.next_offset.update(stored)
        self.seek_stored(assigned, stored, rebuild_missing=True)  # no state stored (new group, lost Redis): rebuild
        self.assigned(parts)
        log.info("worker %s assigned partitions %s", self.config.worker_id, parts)
        self.publish_stats()

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, max_idle_s: float | None = None, install_signals: bool = True) -> None:
        tune_gc()
        super().run(max_idle_s, install_signals)

    def tick(self) -> None:
        if self.step() or not self.consumer.assignment():
            self.active()

    def idle_done(self) -> bool:
        return not self.batch_events

    def drain(self) -> None:
        self.flush(wait=True)

    def settle(self) -> None:
        self._finish_write()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._writer.shutdown()

    def step(self, timeout_ms: int = 100) -> int:
        records = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.config.max_poll_records)
        n = self._apply_records(records) if records else 0
        if self._inflight is not None and self._inflight[0].done():
            self._finish_write()
        elif self.stats_due():  # idle: still say "alive"
            self.publish_stats()
        due = self.batch_started is not None and time.monotonic() - self.batch_started >= self.config.flush_interval_s
        if self.batch_events >= self.config.flush_events or due or (not n and self.flush_when_idle()):
            self.flush()
        return n

    def _apply_records(self, records) -> int:
        parsed = []
        skipped = 0
        for tp, msgs in records.items():
            p = tp.partition
            done = self.next_offset.get(p, -1)
            for m in msgs:
                if m.offset < done:  # already applied and stored (a re-delivery)
                    skipped += 1
                    continue
                self.pending_offsets[p] = m.offset + 1
                try:
                    e = parse_event(m.value)
                    if self.table.index(e.item_id) is None:
                        raise EventError("unknown item", e.item_id)
                except EventError as err:
                    self.dead.append(self.dead_letter(m, err.reason, err.detail))
                    continue
                parsed.append((p, m.timestamp, e))
        if self.batch_started is None:
            self.batch_started = time.monotonic()
        self._load_users({e.user_id for _, _, e in parsed})
        for p, produced, e in parsed:
            self._apply(p, e)
            self.produced_at.append(produced)
        n = sum(len(m) for m in records.values())
        self.batch_events += n - skipped
        self.stats["events"] += n - skipped
        return n

    def _load_users(self, user_ids: set[str]) -> None:
        missing = [u for u in user_ids if u not in self.users]
        if not missing:
            return
        raws = self._retry(lambda: self.redis.mget([f"{self.ns}:user:{u}" for u in missing]))
        for u, raw in zip(missing, raws):
            self.users[u] = UserState.from_bytes(raw)

    def _apply(self, partition: int, e: Event) -> None:
        u = self.users[e.user_id]
        if not u.first_sight(e.event_id):
            self.stats["duplicates"] += 1
            return
        self.dirty_users.add(e.user_id)
        self.observe(partition, e, u)
        if e.type == "click":
            if e.scene == SCENE:
                add_click(u.short, e.ts, e.item_id)
                self.short_dirty.add(e.user_id)
            add_action(u.long, e.ts, e.item_id, CLICK, self.config.long_term.max_events)
            self.long_dirty.add(e.user_id)
        elif e.type == "order":
            add_action(u.long, e.ts, e.item_id, ORDER, self.config.long_term.max_events)
            self.long_dirty.add(e.user_id)
        if e.type != "exposure":
            u.last_ts = max(u.last_ts, e.ts)
        self.stats["applied"] += 1

    # ---- flush -------------------------------------------------------------------------------
    def flush(self, close_sessions: bool = True, wait: bool = False) -> None:
        """Write the batch in one Redis transaction on the writer thread, so the next batch is
        read and applied meanwhile; at most one write is in flight (back-pressure when Redis
        is slow or down). `wait` returns only once it is stored and committed."""
        self._finish_write()
        due = self.due(close_sessions)
        if not self.pending_offsets and not due and not self.dirty_users:
            return
        queue_role = self.role_writes(due)
        states = {f"{self.ns}:user:{u}": self.users[u].to_bytes() for u in self.dirty_users}
        offsets = {f"{self.topic}:{p}": o for p, o in self.pending_offsets.items()}

        def queue(pipe) -> None:
            if states:
                pipe.mset(states)
            queue_role(pipe)
            if offsets:
                pipe.hset(f"{self.ns}:offsets", mapping=offsets)

        produced = np.asarray(self.produced_at, dtype=np.float64)

        def write() -> None:
            self._transact(queue, offsets)
            if len(produced):
                self.freshness.extend((time.time() * 1000 - produced).tolist())

        self.next_offset.update(self.pending_offsets)
        self._inflight = (self._writer.submit(write), dict(self.pending_offsets))
        self._reset_batch()
        if wait or len(self.users) > self.config.max_cached_users:
            self._finish_write()
        if len(self.users) > self.config.max_cached_users:
            self.users.clear()

    def _finish_write(self) -> None:
        """Wait for the in-flight Redis transaction, then commit its offsets to Kafka (the
        consumer is not thread-safe, so commits stay on this thread)."""
        if self._inflight is None:
            return
        future, offsets = self._inflight
        future.result()
        self._inflight = None
        self.commit(offsets)
        self.stats["flushes"] += 1
        self._rate.append((time.monotonic(), self.stats["events"]))
        self.publish_stats()

    def _transact(self, queue: Queue, offsets: dict[str, int]) -> None:
        def write() -> None:
            with self.redis.pipeline(transaction=True) as pipe:
                queue(pipe)
                pipe.execute()

        self._retry(write, landed=(lambda: self._landed(offsets)) if offsets else None)

    def _landed(self, offsets: dict[str, int]) -> bool:
        """Whether a transaction whose reply was lost did apply (its offsets are stored)."""
        try:
            stored = self.redis.hmget(f"{self.ns}:offsets", list(offsets))
        except REDIS_DOWN:
            return False
        return all(s is not None and int(s) == v for s, v in zip(stored, offsets.values()))

    def _retry(self, call, landed=None):
        """Call until Redis answers, backing off 50 ms doubling to 2 s; `landed` tells after a
        failure whether the call took effect anyway (a lost reply), ending the retries."""
        delay = 0.05
        while True:
            try:
                return call()
            except REDIS_DOWN as err:
                self.stats["redis_retries"] += 1
                log.warning("Redis call failed (%s); retrying in %.2fs, nothing committed", err, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                if landed is not None and landed():
                    return None

    # ---- metrics -----------------------------------------------------------------------------
    def rate(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def snapshot(self) -> dict:
        f = np.asarray(self.freshness) if self.freshness else np.zeros(1)
        return {**self.stats, "worker_id": self.config.worker_id, "events_per_s": round(self.rate(), 1),
                "freshness_ms_p50": round(float(np.percentile(f, 50)), 1),
                "freshness_ms_p99": round(float(np.percentile(f, 99)), 1),
                "partitions": sorted(self.next_offset), "updated_ms": int(time.time() * 1000)}

    def write_stats(self) -> None:
        try:
            self.redis.hset(f"{self.ns}:workers", self.config.worker_id, json.dumps(self.snapshot()))
        except redis.RedisError:
            pass
