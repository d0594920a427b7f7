"""The feature worker against the real broker and Redis: bad events go to the DLQ and good
ones around them are applied; kill -9 three times mid-stream ends in exactly the features of
an undisturbed run; a 10 s Redis outage loses nothing."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaConsumer

from features.client import feature_store, item_features, user_features
from infra import services as svc
from infra.process import free_port
from infra.settings import RedisSettings, Settings, redis_client
from onevision.behaviour.backfill import user_context
from onevision.items import ItemTable
from streaming.harness import applied, dump, spawn_worker, wait_applied
from streaming.harness import write_items as write_table
from streaming.producer import EventProducer, event
from streaming.replay import replay
from streaming.synthetic import synthetic_events, synthetic_table
from streaming.worker import FeatureWorker, WorkerConfig

pytestmark = pytest.mark.timeout(600)


def isolated(settings: Settings, name: str, db: int | None = None, redis_url: str | None = None) -> Settings:
    """The session's services with topics of this test's own (and optionally another Redis db)."""
    k = settings.kafka.model_copy(update={"events_topic": f"{name}.events", "dlq_topic": f"{name}.dlq",
                                          "sessions_topic": f"{name}.sessions", "requests_topic": f"{name}.requests",
                                          "catalog_topic": f"{name}.catalog"})
    url = redis_url or settings.redis.url
    if db is not None:
        url = url.rsplit("/", 1)[0] + f"/{db}"
    s = settings.model_copy(update={"kafka": k, "redis": settings.redis.model_copy(update={"url": url})})
    svc.ensure_topics(s)
    return s


def run_until_idle(settings: Settings, table: ItemTable, group: str, idle: float = 3.0) -> FeatureWorker:
    w = FeatureWorker(settings, table, WorkerConfig(group=group))
    w.run(max_idle_s=idle, install_signals=False)
    return w


def committed(settings: Settings, group: str) -> list[int | None]:
    """The group's Kafka-committed offsets per partition."""
    from kafka import TopicPartition

    c = KafkaConsumer(**settings.kafka.client_options(), group_id=group, enable_auto_commit=False)
    try:
        return [c.committed(TopicPartition(settings.kafka.events_topic, p))
                for p in sorted(c.partitions_for_topic(settings.kafka.events_topic))]
    finally:
        c.close()


def test_bad_events_go_to_the_dlq_and_good_ones_around_them_apply(services):
    """Also: a duplicated event (same event_id) counts once."""
    s = isolated(services, "dlq")
    table = synthetic_table(n_items=50)
    good = table.item_ids
    p = EventProducer(s)
    ts = 1_767_225_600_000
    p.send(event("click", "u1", good[0], ts=ts, request_id="r1"))
    p.send_raw("u1", b"{this is not json")
    like = {**json.loads(event("click", "u1", good[1], ts=ts + 1).to_json()), "type": "like"}
    p.send_raw("u1", json.dumps(like).encode())
    p.send(event("click", "u1", "no-such-item", ts=ts + 2))
    raw = json.loads(event("click", "u1", good[2], ts=ts + 3).to_json())
    p.send_raw("u1", json.dumps({k: v for k, v in raw.items() if k != "item_id"}).encode())
    p.send_raw("u1", json.dumps({**raw, "schema": 99}).encode())
    p.send(event("click", "u1", good[3], ts=ts + 4, request_id="r1", event_id="c3"))
    p.send(event("click", "u1", good[3], ts=ts + 4, request_id="r1", event_id="c3"))  # a producer's retry
    # an order priced 1e308 from a trusted producer (it once killed the worker: OverflowError in item stats)
    p.send_raw("u1", json.dumps({**json.loads(event("order", "u1", good[4], ts=ts + 5).to_json()),
                                 "price": 1e308}).encode())
    p.send(event("order", "u1", good[3], ts=ts + 5, request_id="r1", price=12.5))
    p.close()

    w = run_until_idle(s, table, "dlq-test")
    assert w.stats["dlq"] == 6 and w.stats["applied"] == 3 and w.stats["duplicates"] == 1

    c = KafkaConsumer(s.kafka.dlq_topic, **s.kafka.client_options(), auto_offset_reset="earliest",
                      consumer_timeout_ms=5000)
    letters = [json.loads(m.value) for m in c]
    c.close()
    assert sorted(x["reason"] for x in letters) == sorted(
        ["malformed json", "unknown type", "unknown item", "missing field", "wrong schema version", "invalid field"])
    assert all(x["topic"] == s.kafka.events_topic and x["raw"] for x in letters)
    assert next(x for x in letters if x["reason"] == "unknown item")["detail"] == "no-such-item"

    store = feature_store(s, backend="redis")
    (user,) = user_features(store, ["u1"])
    assert user["short_sids"] == [table.sid(good[3]), table.sid(good[0])]  # newest first
    assert table.is_valid(user["long_sid"])
    (item,) = item_features(store, [good[3]])
    assert (item["clicks_30d"], item["orders_30d"], item["gmv_30d"]) == (1, 1, 12.5)
    assert item["sid"] == table.sid(good[3])


def test_kill_minus_9_three_times_ends_exactly_like_an_undisturbed_run(services, tmp_path):
    name = f"kill{uuid.uuid4().hex[:6]}"
    calm, killed = isolated(services, name, db=1), isolated(services, name, db=2)
    table = synthetic_table(n_items=2000, dim=32)
    table_path = write_table(table, tmp_path / "items.parquet")
    events = synthetic_events(table, 100_000, n_users=3000, seed=5)

    producer = threading.Thread(target=replay, args=(killed, events), kwargs={"rate": 6000})
    producer.start()
    worker = spawn_worker(killed, table_path, "kill")
    kills = 0
    for _ in range(3):
        start = applied(killed, "kill")
        deadline = time.time() + 60
        while applied(killed, "kill") <= start + 2000 and time.time() < deadline:  # let it get going
            time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        worker = spawn_worker(killed, table_path, "kill")
    producer.join()
    assert kills == 3 and applied(killed, "kill") < len(events), "the kills should land while events flow"
    wait_applied(killed, "kill", len(events), timeout=180)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0

    run_until_idle(calm, table, "calm")
    a, b = dump(calm, "calm"), dump(killed, "kill")
    assert len(a) > 3000  # users, items, state, offsets
    assert a.keys() == b.keys()
    assert a == b


def test_redis_down_for_ten_seconds_loses_nothing(services, tmp_path):
    own = Settings(state_dir=tmp_path / "state", kafka=services.kafka,
                   redis=RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    redis_proc = svc.redis_server(own)
    redis_proc.start(tie_to_parent=True)
    try:
        s = isolated(own, f"outage{uuid.uuid4().hex[:6]}")
        reference = isolated(own, s.kafka.events_topic.split(".")[0], db=1)
        table = synthetic_table(n_items=500, dim=16)
        table_path = write_table(table, tmp_path / "items.parquet")
        events = synthetic_events(table, 40_000, n_users=800, seed=9)
        producer = threading.Thread(target=replay, args=(s, events), kwargs={"rate": 2000})
        worker = spawn_worker(s, table_path, "outage")
        producer.start()
        wait_applied(s, "outage", 3000)
        redis_proc.stop()
        time.sleep(2)
        before = committed(s, "outage")
        time.sleep(8)
        assert committed(s, "outage") == before, "nothing may be committed while Redis is down"
        assert worker.poll() is None, "the worker must ride out the outage"
        redis_proc.start(tie_to_parent=True)
        producer.join()
        wait_applied(s, "outage", len(events), timeout=120)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        stats = json.loads(next(iter(redis_client(s.redis).hvals("ov:outage:workers"))))
        assert stats["redis_retries"] > 0

        run_until_idle(reference, table, "outage")
        assert dump(s, "outage") == dump(reference, "outage")
    finally:
        redis_proc.stop()


def test_features_match_a_batch_recomputation(services):
    """Streamed features equal the same features computed from the whole log with pandas."""
    s = isolated(services, f"exact{uuid.uuid4().hex[:6]}")
    table = synthetic_table(n_items=300, dim=16)
    # 90 days of traffic, so the 30-day window really slides
    events = synthetic_events(table, 20_000, n_users=200, seed=11, spacing_ms=800_000)
    replay(s, events)
    run_until_idle(s, table, "exact")
    store = feature_store(s, backend="redis")

    acts = events[events.type != "exposure"].copy()
    acts["day"] = acts.ts // 86_400_000
    last_day = acts.groupby("item_id").day.max()
    acts = acts[acts.day > acts.item_id.map(last_day) - 30]
    clicks = acts[acts.type == "click"].groupby("item_id").size()
    orders = acts[acts.type == "order"].groupby("item_id")
    items = sorted(set(events[events.type != "exposure"].item_id))
    got = {r["item_id"]: r for r in item_features(store, items)}
    for item in items:
        assert got[item]["clicks_30d"] == clicks.get(item, 0)
        assert got[item]["orders_30d"] == (orders.size().get(item, 0))
        assert got[item]["gmv_30d"] == pytest.approx(orders.price.sum().get(item, 0.0), abs=1e-6)
        assert got[item]["s_conv"] == pytest.approx(got[item]["clicks_30d"] + 0.01 * got[item]["gmv_30d"]
                                                    + 5 * got[item]["orders_30d"])

    search_clicks = events[(events.type == "click") & (events.scene == "image_search")]
    users = sorted(set(events[events.type != "exposure"].user_id))
    rows = {r["user_id"]: r for r in user_features(store, users)}
    for user in users:
        mine = search_clicks[search_clicks.user_id == user]
        latest = mine.sort_values("ts", kind="stable").item_id.tolist()[::-1][:5]
        assert rows[user]["short_sids"] == [table.sid(i) for i in latest]
        assert table.is_valid(rows[user]["long_sid"])
    # the long-term window's SIDs, as training's point-in-time backfill computes them from the log
    batch = user_context(events, table, users, np.full(len(users), np.iinfo(np.int64).max)).features()
    for user, want in zip(users, batch):
        assert ["-".join(map(str, s)) for s in rows[user]["recent_sids"]] == want["recent_sids"]
        assert 0 < len(want["recent_sids"]) <= 50
