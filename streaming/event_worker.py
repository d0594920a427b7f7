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
- bad events are set aside with their reason and the worker carries on; so is an event whose
  application raises ("apply failed"), leaving no trace in the batch: one poisoned event can
  neither crash the worker nor, by crashing it on every restart, stall its partition;
- offsets advance only past events applied or set aside, and a worker whose loop dies never
  writes its half batch: the restart reads it again from the stored offsets;
- each flush is fenced by the partitions' epochs (`streaming.fencing`), so a worker evicted
  while stuck cannot land a stale transaction after the partition's new owner;
- when Redis is down the flush is retried with back-off, nothing is committed meanwhile,
  and a retry first checks whether the lost reply's transaction did land;
- the item table follows the catalog's changes (`streaming.catalog_stream`): read at start, then
  every `CATALOG_POLL_S`, and always before an event's item is called unknown (a new item's
  change is on the catalog topic before anyone can be shown it), so its events are applied.
"""

from __future__ import annotations

import abc
import gc
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import redis

from infra.settings import Settings, redis_client
from onevision.behaviour.long_term import CLICK, ORDER, add_action
from onevision.behaviour.short_term import SHORT_SCENES, add_click
from onevision.items import ItemTable
from streaming.catalog_stream import CatalogFollower, changed_states
from streaming.consumer import ConsumerJob
from streaming.fencing import claim_partitions, epoch_key, fenced_write, holds
from streaming.schema import DeadLetter, Event, EventError, parse_event
from streaming.user_state import UserState
from streaming.worker_config import ROLE_GROUPS, WorkerConfig, namespace

log = logging.getLogger(__name__)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
Queue = Callable[[redis.client.Pipeline], None]  # queues writes on a Redis transaction
APPLY_FAILED = "apply failed"  # the dead letter of an event whose application raised
CATALOG_POLL_S = 1.0  # how often an idle or busy worker looks for catalog changes


def tune_gc() -> None:
    """The item table and caches are long-lived: keep the cyclic GC from re-walking them on every
    batch (it doubled the per-event cost). Process-wide, so called by the worker's run loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class EventWorker(ConsumerJob):
    """A role (`FeatureWorker`, `SessionWorker`) sets `role` and adds what only it does: `observe`
    (its part of one event), `role_writes` (its output at a flush), and optionally `due`,
    `flush_when_idle`, `assigned`, `revoked` and `checkpoint` (how to undo `observe`)."""

    role = ""
    offsets_home = "Redis"
    reports_invalid = False  # send invalid events to the DLQ (one role does, or each would be reported twice)

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
        self.redis = redis_client(settings.redis, socket_timeout=10, socket_connect_timeout=2)
        self.users: dict[str, UserState] = {}
        self.next_offset: dict[int, int] = {}  # applied and stored
        self.epochs: dict[int, int] = {}  # partition -> the fencing epoch this worker holds
        self._reset_batch()
        self.stats = {"events": 0, "applied": 0, "dlq": 0, "apply_failed": 0, "duplicates": 0, "flushes": 0,
                      "redis_retries": 0, "sessions": 0, "fenced": 0, "log_resets": 0}
        self._abandon = threading.Event()  # closing after a crash: stop retrying the in-flight write
        self.freshness: deque[float] = deque(maxlen=20_000)
        self._rate = deque(maxlen=20)  # (monotonic time, events) at recent flushes
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="redis-writer")
        self._inflight = None
        self.catalog = CatalogFollower(settings, client_id=f"{c.worker_id}-catalog", keep_photos=False)
        self.stats.update(catalog_items=0, catalog_refused=0, catalog_errors=0)
        self._catalog_polled = 0.0
        self._poll_catalog(catch_up=True)
        super().__init__(
            settings, settings.kafka.events_topic, c.group, max_poll_records=c.max_poll_records,
            fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
            receive_message_max_bytes=64 * 1024 * 1024,
            fetch_min_bytes=1, fetch_max_wait_ms=50, session_timeout_ms=c.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(c.kafka_session_timeout_ms // 4, 500))

    # ---- what a role adds ---------------------------------------------------------------------
    def observe(self, partition: int, e: Event, user: UserState) -> None:
        """The role's part of applying one new event, before the user's state takes it."""

    def checkpoint(self, partition: int, e: Event) -> Callable[[], None]:
        """Called before `observe`: what undoes `observe`'s changes to the role's state should
        applying this event fail (the event is dead-lettered and must leave no trace)."""
        return lambda: None

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

    def table_changed(self, items: list[str]) -> None:
        """The item table now gives these items a new or changed SID (the role updates what it derives)."""

    # ---- catalog changes ---------------------------------------------------------------------
    def _catalog(self, changes: list) -> None:
        """Take catalog changes into the item table (refusing SIDs of another tokenizer)."""
        if not changes:
            return
        from onevision.catalog.changes import Expect, acceptable

        t = self.table
        expect = Expect(t.tokenizer, (2**31,) * t.levels,
                        vector_dim=None if t.vectors is None else len(t.vectors[0]))
        states, refused = acceptable(changed_states(self.catalog, changes), expect)
        self.stats["catalog_refused"] += len(refused)
        self.table, changed = self.table.with_changes(states)
        if changed:
            self.stats["catalog_items"] += len(changed)
            self.table_changed(changed)
            log.info("item table: %d items got a new or changed SID from catalog changes", len(changed))

    def _poll_catalog(self, catch_up: bool = False) -> None:
        """New catalog changes into the table; a read or a batch that fails is logged, and the worker
        carries on with the table it had (an event of an item it still lacks is dead-lettered)."""
        self._catalog_polled = time.monotonic()
        try:
            self._catalog(self.catalog.catch_up() if catch_up else self.catalog.poll(0))
        except Exception:  # noqa: BLE001 - the broker away, or a change that cannot be built
            self.stats["catalog_errors"] += 1
            log.exception("catalog changes not taken; the worker keeps its item table")

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
            self.epochs.pop(tp.partition, None)
        self.revoked([tp.partition for tp in revoked])

    def on_partitions_assigned(self, assigned):
        self.users.clear()
        parts = [tp.partition for tp in assigned]
        epochs, stored = self._retry(lambda: claim_partitions(self.redis, self.ns, self.topic, parts))
        self.epochs.update(epochs)
        for p, end in self.past_log_end(stored).items():
            log.error("partition %d: the stored offset %d is past the log's end %d: the topic was made again "
                      "(its old records are gone); reading its new records from the start", p, stored.pop(p), end)
            self.next_offset.pop(p, None)
            self.stats["log_resets"] += 1
        self.next_offset.update(stored)
        self.seek_stored(assigned, stored, rebuild_missing=True)  # no state stored (new group, lost Redis): rebuild
        self.assigned(parts)
        log.info("worker %s assigned partitions %s", self.config.worker_id, parts)
        self.active()  # a (re)assignment is work: the idle clock starts again after it
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

    def close(self, clean: bool = True) -> None:
        if not clean:
            self._abandon.set()
        try:
            super().close(clean)
        finally:
            self._writer.shutdown()
            self.catalog.close()

    def step(self, timeout_ms: int = 100) -> int:
        if time.monotonic() - self._catalog_polled >= CATALOG_POLL_S:
            self._poll_catalog()
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
        ends: dict[int, int] = {}
        caught_up = False
        for tp, msgs in records.items():
            p = tp.partition
            done = self.next_offset.get(p, -1)
            for m in msgs:
                if m.offset < done:  # already applied and stored (a re-delivery)
                    skipped += 1
                    continue
                ends[p] = m.offset + 1
                try:
                    e = parse_event(m.value)
                    if self.table.index(e.item_id) is None and not caught_up:  # a new item's change, not read yet?
                        self._poll_catalog(catch_up=True)
                        caught_up = True
                    if self.table.index(e.item_id) is None:
                        raise EventError("unknown item", e.item_id)
                except EventError as err:
                    if self.reports_invalid:
                        self.dead.append(self.dead_letter(m, err.reason, err.detail))
                    continue
                except Exception as err:  # a bug, not a bad event: still only this event's problem
                    self._failed(m, err)
                    continue
                parsed.append((p, m, e))
        if self.batch_started is None:
            self.batch_started = time.monotonic()
        self._load_users({e.user_id for _, _, e in parsed})
        for p, m, e in parsed:
            try:
                self._apply(p, e)
            except Exception as err:
                self._failed(m, err)
                continue
            self.produced_at.append(m.timestamp)
        self.pending_offsets.update(ends)  # every record read is now applied or set aside
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
        """Apply one event all or nothing: the user's new state is built on a copy and the role's
        changes are undone (`checkpoint`) when anything raises."""
        before = self.users[e.user_id]
        u = before.copy()
        if not u.first_sight(e.event_id):
            self.stats["duplicates"] += 1
            return
        short = e.type == "click" and e.scene in SHORT_SCENES
        if short:
            add_click(u.short, e.ts, e.item_id)
        if e.type in ("click", "order"):
            add_action(u.long, e.ts, e.item_id, CLICK if e.type == "click" else ORDER,
                       self.config.long_term.max_events)
            u.last_ts = max(u.last_ts, e.ts)
        undo = self.checkpoint(partition, e)
        try:
            self.observe(partition, e, before)
        except BaseException:
            undo()
            raise
        self.users[e.user_id] = u
        self.dirty_users.add(e.user_id)
        if short:
            self.short_dirty.add(e.user_id)
        if e.type != "exposure":
            self.long_dirty.add(e.user_id)
        self.stats["applied"] += 1

    def _failed(self, m, err: Exception) -> None:
        """Set aside an event whose application raised, with the error, and carry on."""
        detail = f"{type(err).__name__}: {err}"[:500]
        log.warning("event at %s[%d]@%d failed to apply (%s); sent to the DLQ", m.topic, m.partition, m.offset, detail)
        self.dead.append(self.dead_letter(m, APPLY_FAILED, detail))
        self.stats["apply_failed"] += 1

    # ---- flush -------------------------------------------------------------------------------
    def flush(self, close_sessions: bool = True, wait: bool = False) -> None:
        """Write the batch in one Redis transaction on the writer thread, so the next batch is
        read and applied meanwhile; at most one write is in flight (back-pressure when Redis
        is slow or down). `wait` returns only once it is stored and committed."""
        self._finish_write()
        due = self.due(close_sessions)
        if not self.pending_offsets and not due and not self.dirty_users:
            return
        self._send_dead_letters()
        queue_role = self.role_writes(due)
        states = {f"{self.ns}:user:{u}": self.users[u].to_bytes() for u in self.dirty_users}
        offsets = {f"{self.topic}:{p}": o for p, o in self.pending_offsets.items()}
        epochs = {f"{self.topic}:{p}": e for p, e in self.epochs.items()}

        def queue(pipe) -> None:
            if states:
                pipe.mset(states)
            queue_role(pipe)
            if offsets:
                pipe.hset(f"{self.ns}:offsets", mapping=offsets)

        produced = np.asarray(self.produced_at, dtype=np.float64)

        def write() -> bool:
            landed = self._transact(queue, offsets, epochs)
            if landed and len(produced):
                self.freshness.extend((time.time() * 1000 - produced).tolist())
            return landed

        self.next_offset.update(self.pending_offsets)
        self._inflight = (self._writer.submit(write), dict(self.pending_offsets))
        self._reset_batch()
        if wait or len(self.users) > self.config.max_cached_users:
            self._finish_write()
        if len(self.users) > self.config.max_cached_users:
            self.users.clear()

    def _send_dead_letters(self) -> None:
        for letter in self.dead:
            self.send_dead_letter(letter)
        if self.dead:
            self.producer.flush()
        self.stats["dlq"] += len(self.dead)

    def _finish_write(self) -> None:
        """Wait for the in-flight Redis transaction, then commit its offsets to Kafka (the
        consumer is not thread-safe, so commits stay on this thread)."""
        if self._inflight is None:
            return
        future, offsets = self._inflight
        self._inflight = None
        if not future.result():
            self._fenced()
            return
        self.commit(offsets)
        self.stats["flushes"] += 1
        self._rate.append((time.monotonic(), self.stats["events"]))
        self.publish_stats()

    def _transact(self, queue: Queue, offsets: dict[str, int], epochs: dict[str, int]) -> bool:
        """Write the batch, fenced by `epochs`; False when it did not land because another
        worker owns one of the partitions now."""
        landed = self._retry(lambda: fenced_write(self.redis, self.ns, epochs, queue),
                             landed=(lambda: self._landed(offsets, epochs)) if offsets else None)
        return landed is not False

    def _landed(self, offsets: dict[str, int], epochs: dict[str, int]) -> bool | None:
        """Whether a transaction whose reply was lost did apply: its offsets are stored and the
        epochs are still this worker's (so nobody else can have stored those offsets). When the
        epochs moved the retry finds the worker fenced, whichever way its write went. None while
        Redis cannot tell (a retry then might apply the batch twice)."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(f"{self.ns}:offsets", list(offsets))
                if epochs:
                    pipe.hmget(epoch_key(self.ns), list(epochs))
                stored, *current = pipe.execute()
        except REDIS_DOWN:
            return None
        return (holds(current[0] if current else [], epochs)
                and all(s is not None and int(s) == v for s, v in zip(stored, offsets.values())))

    def _fenced(self) -> None:
        """Another worker was assigned some of these partitions while this one was cut off (and
        Kafka will move them away from it too): drop everything not stored, give up the lost
        partitions until Kafka assigns them again, and re-read the others from their stored offsets."""
        self.stats["fenced"] += 1
        parts = sorted(self.epochs)
        fields = [f"{self.topic}:{p}" for p in parts]
        current = self._retry(lambda: self.redis.hmget(epoch_key(self.ns), fields)) if parts else []
        lost = [p for p, c in zip(parts, current) if c is None or int(c) != self.epochs[p]]
        kept = [p for p in parts if p not in lost]
        log.warning("worker %s fenced off: partitions %s belong to another worker now; dropping its unstored batch "
                    "and re-reading partitions %s from their stored offsets", self.config.worker_id, lost, kept)
        self._reset_batch()
        self.users.clear()
        self.revoked(parts)
        for p in lost:
            self.epochs.pop(p)
        for p in parts:
            self.next_offset.pop(p, None)
        tps = {tp.partition: tp for tp in self.consumer.assignment()}
        if paused := [tps[p] for p in lost if p in tps]:
            self.consumer.pause(*paused)  # until the rebalance that hands them over
        raw = self._retry(lambda: self.redis.hmget(f"{self.ns}:offsets", [f"{self.topic}:{p}" for p in kept])) \
            if kept else []
        stored = {p: int(o) for p, o in zip(kept, raw) if o is not None}
        self.next_offset.update(stored)
        self.seek_stored([tps[p] for p in kept if p in tps], stored, rebuild_missing=True)
        self.assigned(kept)

    def _retry(self, call, landed=None):
        """Call until Redis answers, backing off 50 ms doubling to 2 s; `landed` tells after a
        failure whether the call took effect anyway (a lost reply), ending the retries."""
        delay = 0.05
        while True:
            try:
                return call()
            except REDIS_DOWN as err:
                if self._abandon.is_set():
                    raise
                self.stats["redis_retries"] += 1
                log.warning("Redis call failed (%s); retrying in %.2fs, nothing committed", err, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                if landed is None:
                    continue
                while (answer := landed()) is None:  # unknown: ask again, never write blind
                    if self._abandon.is_set():
                        raise err
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                if answer:
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
                "partitions": sorted(self.epochs), **self.liveness()}

    def write_stats(self) -> None:
        try:
            self.redis.hset(f"{self.ns}:workers", self.config.worker_id, json.dumps(self.snapshot()))
        except redis.RedisError:
            pass
