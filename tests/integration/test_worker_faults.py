"""The feature worker when things go wrong, against the real broker and Redis: an event whose
application raises is dead-lettered and leaves no trace; a crash mid-batch stores nothing of it
and a rerun applies everything exactly once; a worker fenced off by a new owner lands nothing;
a killed worker is reported dead within 15 s, and a supervised one comes back."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
from kafka import KafkaConsumer

from features.client import feature_store, item_features, user_features
from infra.settings import redis_client
from streaming.fencing import claim_partitions
from streaming.launch import worker_process
from streaming.producer import EventProducer, event
from streaming.replay import replay
from streaming.status import ALIVE_S, stream_status, worker_liveness
from streaming.synthetic import synthetic_events, synthetic_table
from streaming.worker import FeatureWorker, WorkerConfig
from tests.integration.test_stream_worker import applied, dump, isolated, run_until_idle, spawn_worker, write_table

pytestmark = pytest.mark.timeout(600)


def letters(settings) -> list[dict]:
    c = KafkaConsumer(settings.kafka.dlq_topic, **settings.kafka.client_options(), auto_offset_reset="earliest",
                      consumer_timeout_ms=5000)
    try:
        return [json.loads(m.value) for m in c]
    finally:
        c.close()


class Poisoned(FeatureWorker):
    """A worker whose role fails on one event after it already counted the item (a partial effect)."""

    def observe(self, partition, e, user):
        super().observe(partition, e, user)
        if e.event_id == "poison":
            raise ValueError("boom")


def test_an_event_that_fails_to_apply_is_dead_lettered_and_leaves_no_trace(services):
    s = isolated(services, f"poison{uuid.uuid4().hex[:6]}", db=8)  # its own Feast item rows
    table = synthetic_table(n_items=50)
    good, ts = table.item_ids, 1_767_225_600_000
    p = EventProducer(s)
    p.send(event("click", "u1", good[0], ts=ts))
    p.send(event("click", "u1", good[1], ts=ts + 1, event_id="poison"))
    p.send(event("order", "u1", good[2], ts=ts + 2, price=3.0))
    p.close()
    w = Poisoned(s, table, WorkerConfig(group="poison"))
    w.run(max_idle_s=3, install_signals=False)
    assert (w.stats["applied"], w.stats["apply_failed"], w.stats["dlq"]) == (2, 1, 1)
    (letter,) = letters(s)
    assert (letter["reason"], letter["detail"]) == ("apply failed", "ValueError: boom")
    assert json.loads(letter["raw"])["event_id"] == "poison"
    assert applied(s, "poison") == 3  # past all three: two applied, one set aside
    store = feature_store(s, backend="redis")
    (user,) = user_features(store, ["u1"])
    assert user["short_sids"] == [table.sid(good[0])]  # the poisoned click is not in the user's state
    clicked, poisoned = item_features(store, [good[0], good[1]])
    assert clicked["clicks_30d"] == 1 and not poisoned["clicks_30d"]  # nor in the item counters


class Crashing(FeatureWorker):
    """A worker with a bug that strikes once, after two flushes: in the middle of reading a poll
    (before the fix, the exit's flush stored that poll's offsets without its events) or while
    writing a batch."""

    where = ""

    def _load_users(self, user_ids):
        self._strike("load")
        return super()._load_users(user_ids)

    def role_writes(self, due):
        self._strike("write")
        return super().role_writes(due)

    def _strike(self, where: str) -> None:
        if where == self.where and self.stats["flushes"] >= 2 and not getattr(self, "struck", False):
            self.struck = True
            raise RuntimeError("a bug")


@pytest.mark.parametrize("where", ["load", "write"])
def test_a_worker_that_dies_mid_batch_stores_none_of_it_and_a_rerun_applies_everything_once(services, where):
    name = f"crash{where}{uuid.uuid4().hex[:6]}"
    calm, crashed = isolated(services, name, db=3), isolated(services, name, db=4)
    for db in (calm, crashed):
        redis_client(db.redis).flushdb()
    table = synthetic_table(n_items=300, dim=16)
    events = synthetic_events(table, 6000, n_users=200, seed=3)
    replay(crashed, events)
    w = Crashing(crashed, table, WorkerConfig(group="crash", flush_events=500, max_poll_records=500))
    w.where = where
    with pytest.raises(RuntimeError, match="a bug"):
        w.run(max_idle_s=5, install_signals=False)
    assert w.stats["flushes"] >= 2 and applied(crashed, "crash") < len(events)
    assert applied(crashed, "crash") <= w.stats["events"] - w.batch_events  # nothing of the batch it died in
    run_until_idle(crashed, table, "crash")
    assert applied(crashed, "crash") == len(events)
    run_until_idle(calm, table, "crash")
    assert dump(crashed, "crash") == dump(calm, "crash")


def test_a_fenced_off_worker_lands_nothing(services):
    s = isolated(services, f"fence{uuid.uuid4().hex[:6]}", db=5)
    redis_client(s.redis).flushdb()
    table = synthetic_table(n_items=300, dim=16)
    events = synthetic_events(table, 3000, n_users=100, seed=4)
    replay(s, events.iloc[:2000])
    a = FeatureWorker(s, table, WorkerConfig(group="fence", flush_events=10**9, flush_interval_s=3600))
    try:
        deadline = time.time() + 60
        while a.stats["events"] < 2000:
            assert time.time() < deadline
            a.step()
        a.flush(wait=True)
        assert applied(s, "fence") == 2000 and a.stats["fenced"] == 0
        replay(s, events.iloc[2000:])
        while a.stats["events"] < 3000:
            assert time.time() < deadline
            a.step()
        before = dump(s, "fence")
        r = redis_client(s.redis)
        claim_partitions(r, "ov:fence", s.kafka.events_topic, sorted(a.epochs))  # as a new owner's assignment
        a.flush(wait=True)
        assert a.stats["fenced"] == 1
        assert dump(s, "fence") == before  # no features, item stats or offsets of the stale batch
        assert applied(s, "fence") == 2000
    finally:
        a.close()


def liveness_of(settings, pid: int, group: str) -> dict | None:
    return next((w for w in worker_liveness(settings, groups={"features": group}) if w["pid"] == pid), None)


def wait_for(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while not (got := check()):
        assert time.time() < deadline, what
        time.sleep(0.25)
    return got


def test_a_killed_worker_is_reported_dead_within_15_s_and_a_stopped_one_at_once(services, tmp_path):
    s = isolated(services, f"live{uuid.uuid4().hex[:6]}", db=6)
    redis_client(s.redis).flushdb()
    path = write_table(synthetic_table(n_items=50, dim=8), tmp_path / "items.parquet")
    group = f"live-{uuid.uuid4().hex[:6]}"  # a group of its own: a killed member lingers in it for a while
    killed = spawn_worker(s, path, group)
    wait_for(lambda: (liveness_of(s, killed.pid, group) or {}).get("alive"), 90, "the worker never said it was alive")
    stats = liveness_of(s, killed.pid, group)["stats"]  # what /metrics exports per live job (onevision_stream_job_stat)
    assert {"events", "events_per_s", "freshness_ms_p99"} <= set(stats) and not {"pid", "updated_ms"} & set(stats)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    t0 = time.time()
    wait_for(lambda: liveness_of(s, killed.pid, group)["alive"] is False, ALIVE_S + 1, "still alive 15 s after kill -9")
    assert time.time() - t0 <= ALIVE_S + 1
    assert not next(w for w in stream_status(s, group)["workers"] if w["pid"] == killed.pid)["alive"]

    stopped = spawn_worker(s, path, group)
    wait_for(lambda: any(w["pid"] == stopped.pid and w["partitions"] for w in stream_status(s, group)["workers"]), 90,
             "the worker never got its partitions")  # in its loop, its TERM handler installed
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(30) == 0
    row = liveness_of(s, stopped.pid, group)
    assert row["state"] == "stopped" and not row["alive"] and row["age_s"] < ALIVE_S  # fresh, yet not alive


def test_a_supervised_worker_killed_is_restarted(services, tmp_path):
    s = isolated(services, f"super{uuid.uuid4().hex[:6]}", db=9).model_copy(update={"state_dir": tmp_path})
    redis_client(s.redis).flushdb()
    path = write_table(synthetic_table(n_items=50, dim=8), tmp_path / "items.parquet")
    group = f"super-{uuid.uuid4().hex[:6]}"  # a group of its own: a killed member lingers in it for a while
    proc = worker_process(s, "features", path, group=group)
    proc.start(90)
    try:
        supervisor = proc.pid()
        mine = lambda: [w for w in worker_liveness(s, groups={"features": group})  # noqa: E731
                        if w["supervisor_pid"] == supervisor]
        (first,) = wait_for(lambda: [w for w in mine() if w["alive"]], 30, "no live worker under the supervisor")
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(lambda: not liveness_of(s, first["pid"], group)["alive"], ALIVE_S + 1,
                 "still alive 15 s after kill -9")
        (second,) = wait_for(lambda: [w for w in mine() if w["alive"] and w["pid"] != first["pid"]], 60,
                             "the supervisor did not bring the worker back")
        assert proc.pid() == supervisor and proc.is_healthy()
    finally:
        assert proc.stop(timeout=30)
    assert liveness_of(s, second["pid"], group)["state"] == "stopped"


def test_a_topic_made_again_is_read_from_its_start_not_skipped(services):
    """The broker lost its topics (an in-memory broker restarted) and they were created again:
    the offsets stored in Redis lie past the new logs' ends. The worker says so and applies the
    new records instead of waiting, silently, until the new log grows past the old offsets."""
    s = isolated(services, f"remade{uuid.uuid4().hex[:6]}", db=10)
    table = synthetic_table(n_items=50)
    p = EventProducer(s)
    for i, item in enumerate(table.item_ids[:6]):
        p.send(event("click", f"u{i}", item, ts=1_767_225_600_000 + i))
    p.close()
    stale = {f"{s.kafka.events_topic}:{q}": 50_000 for q in range(s.kafka.partitions)}  # the old log's offsets
    redis_client(s.redis).hset("ov:remade:offsets", mapping=stale)
    w = run_until_idle(s, table, "remade")
    assert w.stats["log_resets"] == s.kafka.partitions and w.stats["applied"] == 6
    assert applied(s, "remade") == 6  # the stored offsets are the new logs' ends
    store = feature_store(s, backend="redis")
    assert all(u["short_sids"] for u in user_features(store, [f"u{i}" for i in range(6)]))
