"""The feature worker: one Kafka consumer-group member that turns behaviour events into Feast
features in Redis (short-term SIDs, long-term SID, item 30-day stats) and search sessions into
session logs.

Delivery is at-least-once reading with effectively-once state:
- events are applied in memory in batches; one Redis MULTI per flush writes the features, the
  worker's per-user state, open sessions, item counters and the next offset of every
  partition it applied, so state and offsets can never disagree;
- the Kafka commit follows the Redis write; on (re)assignment the worker seeks to the offsets
  stored in Redis, so a `kill -9` between the two replays nothing twice (and a partition with
  no stored offset is rebuilt from the start of the topic);
- a producer's duplicate (same event_id) is dropped by a per-user window of recent ids;
- bad events go to the DLQ with their reason and the worker carries on;
- when Redis is down the flush is retried with back-off, nothing is committed meanwhile,
  and a retry first checks whether the lost reply's transaction did land.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import redis
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from features.redis_writer import queue_rows, sid_value, user_row
from infra.settings import Settings
from streaming.item_stats import ItemDeltas, ItemStatsConfig, ItemStatsStore
from onevision.items import ItemTable
from onevision.behaviour.long_term import LongTermConfig, add_action, long_sids
from streaming.producer import kafka_producer, send_dead_letter, send_session
from streaming.schema import DeadLetter, EventError, SessionLog, UserSnapshot, parse_event
from streaming.sessionizer import OpenSession, Sessionizer
from onevision.behaviour.short_term import SCENE, add_click
from onevision.behaviour.long_term import CLICK, ORDER
from streaming.user_state import UserState

log = logging.getLogger(__name__)
DEFAULT_GROUP = "onevision-features"
SESSIONS_GROUP = "onevision-sessions"
ROLE_GROUPS = {"features": DEFAULT_GROUP, "sessions": SESSIONS_GROUP}  # each role its own group
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


@dataclass
class WorkerConfig:
    """`role` features: user and item features into Feast/Redis (the hot path, group
    onevision-features); sessions: session logs onto onevision.sessions (its own group, so
    producing logs never slows feature freshness). Both keep per-user state."""

    role: str = "features"
    group: str = ""  # default: onevision-features / onevision-sessions by role
    flush_events: int = 20_000  # flush after this many events ...
    flush_interval_s: float = 0.25  # ... or this long after the first unflushed one
    max_poll_records: int = 5_000
    long_term: LongTermConfig = field(default_factory=LongTermConfig)
    item_stats: ItemStatsConfig = field(default_factory=ItemStatsConfig)
    session_scenes: tuple[str, ...] = (SCENE,)
    session_timeout_s: float = 30 * 60  # event time
    session_idle_s: float = 60.0  # wall clock
    max_cached_users: int = 200_000
    kafka_session_timeout_ms: int = 6_000  # how soon a killed worker's partitions move on
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


def tune_gc() -> None:
    """The item table and caches are long-lived: keep the cyclic GC from re-walking them on every
    batch (it doubled the per-event cost). Process-wide, so called by the worker's run loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def namespace(group: str) -> str:
    return f"ov:{group}"


class FeatureWorker(ConsumerRebalanceListener):
    def __init__(self, settings: Settings, table: ItemTable, config: WorkerConfig | None = None):
        self.settings, self.table, self.config = settings, table, config or WorkerConfig()
        c = self.config
        if c.role not in ROLE_GROUPS:
            raise ValueError(f"worker role must be one of {tuple(ROLE_GROUPS)}, not {c.role!r}")
        self.features, self.sessionize = c.role == "features", c.role == "sessions"
        c.group = c.group or ROLE_GROUPS[c.role]
        self.ns = namespace(c.group)
        self.topic = settings.kafka.events_topic
        self.redis = redis.Redis.from_url(settings.redis.url, socket_timeout=10, socket_connect_timeout=2)
        sid_bytes = {item: sid_value(table.sids[i]) for i, item in enumerate(table.item_ids)}
        self.item_store = ItemStatsStore(self.redis, self.ns, sid_bytes, c.item_stats)
        self.sessions = Sessionizer(c.session_scenes, int(c.session_timeout_s * 1000), c.session_idle_s)
        self.producer = kafka_producer(settings)
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers, group_id=c.group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=c.max_poll_records,
            fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
            receive_message_max_bytes=64 * 1024 * 1024,
            fetch_min_bytes=1, fetch_max_wait_ms=50, session_timeout_ms=c.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(c.kafka_session_timeout_ms // 4, 500))
        self.consumer.subscribe([self.topic], listener=self)
        self.users: dict[str, UserState] = {}
        self.next_offset: dict[int, int] = {}  # applied and stored
        self._reset_batch()
        self.stats = {"events": 0, "applied": 0, "dlq": 0, "duplicates": 0, "flushes": 0,
                      "redis_retries": 0, "sessions": 0}
        self.freshness: deque[float] = deque(maxlen=20_000)
        self._rate = deque(maxlen=20)  # (monotonic time, events) at recent flushes
        self._stop = threading.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="redis-writer")
        self._inflight = None
        self._publish_stats()  # "alive": what a launcher's health check looks for

    # ---- batch bookkeeping -------------------------------------------------------------------
    def _reset_batch(self) -> None:
        self.pending_offsets: dict[int, int] = {}
        self.dirty_users: set[str] = set()
        self.short_dirty: set[str] = set()
        self.long_dirty: set[str] = set()
        self.items = ItemDeltas()
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
            self.sessions.drop(tp.partition)

    def on_partitions_assigned(self, assigned):
        self.users.clear()
        parts = [tp.partition for tp in assigned]
        stored = self._retry(lambda: self.redis.hmget(f"{self.ns}:offsets", [f"{self.topic}:{p}" for p in parts]))
        for tp, off in zip(assigned, stored):
            if off is not None:
                self.next_offset[tp.partition] = int(off)
                self.consumer.seek(tp, int(off))
            else:  # no state stored for it (new group, or a Redis that lost its data): rebuild it
                self.consumer.seek_to_beginning(tp)
            raw = self._retry(lambda: self.redis.hgetall(f"{self.ns}:sessions:{tp.partition}"))
            self.sessions.load(tp.partition, {k.decode(): OpenSession.from_json(v) for k, v in raw.items()})
        log.info("worker %s assigned partitions %s", self.config.worker_id, parts)
        self._publish_stats()

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, max_idle_s: float | None = None, install_signals: bool = True) -> None:
        """Consume until stopped (SIGTERM/SIGINT) or, with `max_idle_s`, until that long without events."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        tune_gc()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                n = self.step()
                now = time.monotonic()
                if n or not self.consumer.assignment():
                    idle_since = now
                elif max_idle_s is not None and now - idle_since > max_idle_s and not self.batch_events:
                    break
        finally:
            self.flush(wait=True)
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def step(self, timeout_ms: int = 100) -> int:
        records = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.config.max_poll_records)
        n = self._apply_records(records) if records else 0
        if self._inflight is not None and self._inflight[0].done():
            self._finish_write()
        elif time.monotonic() - self._published > 10:  # idle: still say "alive"
            self._publish_stats()
        due = self.batch_started is not None and time.monotonic() - self.batch_started >= self.config.flush_interval_s
        if self.batch_events >= self.config.flush_events or due or (not n and self.sessionize and self.sessions.open):
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
                    self.dead.append(DeadLetter(
                        reason=err.reason, detail=err.detail, topic=tp.topic, partition=p, offset=m.offset,
                        key=m.key.decode("utf-8", "replace") if m.key else None,
                        raw=m.value.decode("utf-8", "replace") if m.value is not None else ""))
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

    def _apply(self, partition: int, e) -> None:
        u = self.users[e.user_id]
        if not u.first_sight(e.event_id):
            self.stats["duplicates"] += 1
            return
        self.dirty_users.add(e.user_id)
        if self.sessionize:
            self.sessions.observe(partition, e, u)
        if e.type == "click":
            if e.scene == SCENE:
                add_click(u.short, e.ts, e.item_id)
                self.short_dirty.add(e.user_id)
            add_action(u.long, e.ts, e.item_id, CLICK, self.config.long_term.max_events)
            self.long_dirty.add(e.user_id)
            if self.features:
                self.items.add(e.item_id, e.ts, clicks=1)
        elif e.type == "order":
            add_action(u.long, e.ts, e.item_id, ORDER, self.config.long_term.max_events)
            self.long_dirty.add(e.user_id)
            if self.features:
                self.items.add(e.item_id, e.ts, orders=1, gmv=e.price or 0.0)
        if e.type != "exposure":
            u.last_ts = max(u.last_ts, e.ts)
        self.stats["applied"] += 1

    # ---- flush -------------------------------------------------------------------------------
    def flush(self, close_sessions: bool = True, wait: bool = False) -> None:
        """Write the batch in one Redis transaction on the writer thread, so the next batch is
        read and applied meanwhile; at most one write is in flight (back-pressure when Redis
        is slow or down). `wait` returns only once it is stored and committed."""
        self._finish_write()
        closed = self.sessions.close_due() if close_sessions and self.sessionize else []
        if not self.pending_offsets and not closed and not self.dirty_users:
            return
        t = self.table
        feature_users = sorted(self.short_dirty | self.long_dirty) if self.features else []
        longs = long_sids(t, [self.users[u].long for u in feature_users if u in self.long_dirty], self.config.long_term)
        long_of = dict(zip([u for u in feature_users if u in self.long_dirty], longs))
        rows = []
        for u in feature_users:
            s = self.users[u]
            long = long_of.get(u)  # the long-term fields are written only when they changed
            rows.append((u, user_row([t.sid(i) for _, i in s.short], long, s.last_ts,
                                     [t.sid(i) for _, i, _ in s.long] if long is not None else ())))
        logs = self._session_logs(closed)
        for letter in self.dead if self.features else ():  # one role reports bad events
            send_dead_letter(self.producer, self.settings, letter)
        for s in logs:
            send_session(self.producer, self.settings, s)
        if (self.dead and self.features) or logs:
            self.producer.flush()
        changed, gone = self.sessions.take_changes()
        states = {f"{self.ns}:user:{u}": self.users[u].to_bytes() for u in self.dirty_users}
        offsets = {f"{self.topic}:{p}": o for p, o in self.pending_offsets.items()}
        items = self.items

        def queue(pipe) -> None:
            if states:
                pipe.mset(states)
            queue_rows(pipe, "user_id", rows)
            if len(items) and self.features:
                self.item_store.queue(pipe, items)
            for p, sess in changed.items():
                if sess:
                    pipe.hset(f"{self.ns}:sessions:{p}", mapping=sess)
            for p, rids in gone.items():
                if rids:
                    pipe.hdel(f"{self.ns}:sessions:{p}", *rids)
            if offsets:
                pipe.hset(f"{self.ns}:offsets", mapping=offsets)

        produced = np.asarray(self.produced_at, dtype=np.float64)

        def write() -> None:
            self._transact(queue, offsets)
            if len(produced):
                self.freshness.extend((time.time() * 1000 - produced).tolist())

        self.stats["dlq"] += len(self.dead) if self.features else 0
        self.stats["sessions"] += len(logs)
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
        self._commit(offsets)
        self.stats["flushes"] += 1
        self._rate.append((time.monotonic(), self.stats["events"]))
        self._publish_stats()

    def _session_logs(self, closed: list[OpenSession]) -> list[SessionLog]:
        if not closed:
            return []
        t = self.table
        longs = long_sids(t, [s.long for s in closed], self.config.long_term)
        return [SessionLog(session_id=s.request_id, request_id=s.request_id, user_id=s.user_id, scene=s.scene,
                           start_ts=s.start_ts, end_ts=s.last_ts, variant=s.variant, experiment=s.experiment,
                           user_features=UserSnapshot(short_sids=[t.sid(i) for i in s.short], long_sid=ls or []),
                           **s.outcome())
                for s, ls in zip(closed, longs)]

    def _transact(self, queue, offsets: dict[str, int]) -> None:
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

    def _commit(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                                  for p, o in offsets.items()})
        except Exception as err:  # Redis holds the truth; a failed commit only costs a re-read
            log.warning("Kafka offset commit failed (%s); Redis offsets stay authoritative", err)

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

    def _publish_stats(self) -> None:
        self._published = time.monotonic()
        try:
            self.redis.hset(f"{self.ns}:workers", self.config.worker_id, json.dumps(self.snapshot()))
        except redis.RedisError:
            pass

    def close(self) -> None:
        try:
            self._finish_write()
            self.consumer.close(autocommit=False)
        finally:
            self._writer.shutdown()
            self.producer.close()


__all__ = ["DEFAULT_GROUP", "ROLE_GROUPS", "SESSIONS_GROUP", "FeatureWorker", "WorkerConfig", "namespace"]
