"""The stream workers follow the catalog topic (real broker and Redis): a launched item's events are
applied, not dead-lettered, and its SID reaches users' features and the item's row; a new photo's
SID replaces the old one for later events; a removed item's late events still count; a change
encoded with another tokenizer is refused and its item stays unknown."""

from __future__ import annotations

import numpy as np
import pytest

from features.client import feature_store, item_features, user_features
from onevision.catalog.changes import new_change, photo_text
from onevision.items import ItemTable
from streaming.catalog_stream import send_changes
from streaming.producer import EventProducer, event, kafka_producer
from streaming.synthetic import EPOCH_MS
from streaming.worker import FeatureWorker, SessionWorker, WorkerConfig
from tests.integration.test_stream_worker import isolated, run_until_idle
from tests.integration.test_worker_faults import letters

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
TOKENIZER = "tokenizer-vrq-test/v0001"


def table() -> ItemTable:
    rng = np.random.default_rng(0)
    return ItemTable([f"i{k}" for k in range(20)], rng.integers(0, 4, (20, 3)), rng.normal(size=(20, 8)), TOKENIZER)


def added(item: str, sid: list[int], tokenizer: str = TOKENIZER, ts: int = EPOCH_MS):
    return new_change("add", item, ts, title=item, category="mugs", price=9.5, image=photo_text(b"jpeg"), sid=sid,
                      vector=[0.1] * 8, embedding=[1.0, 0.0], tokenizer=tokenizer)


def test_each_kind_of_change_reaches_the_feature_worker(services):
    s = isolated(services, "catalogw", db=3)
    t = table()
    producer = kafka_producer(s)
    send_changes(producer, s, [added("new-1", [3, 3, 3]), added("alien", [1, 1, 1], tokenizer="other/v0009"),
                               new_change("remove", "i1", EPOCH_MS)])
    events = EventProducer(s)
    ts = EPOCH_MS
    events.send(event("click", "u1", "new-1", ts=ts + 1))
    events.send(event("click", "u1", "i1", ts=ts + 2))  # removed after it was shown: still a real click
    events.send(event("order", "u1", "new-1", ts=ts + 3, price=9.5))
    events.send(event("click", "u2", "alien", ts=ts + 4))
    events.flush()
    w = run_until_idle(s, t, "catalogw-1")
    assert w.stats["applied"] == 3 and w.stats["dlq"] == 1 and w.stats["catalog_refused"] == 1
    (dead,) = letters(s)
    assert dead["reason"] == "unknown item" and dead["detail"] == "alien"
    store = feature_store(s, backend="redis")
    (u1,) = user_features(store, ["u1"])
    assert u1["short_sids"] == [t.sid("i1"), [3, 3, 3]]  # newest first; the launched item's SID
    (item,) = item_features(store, ["new-1"])
    assert item["sid"] == [3, 3, 3] and (item["clicks_30d"], item["orders_30d"]) == (1, 1)

    # a new photo of the launched item, then a click after it: the new SID from then on
    send_changes(producer, s, [new_change("update", "new-1", ts + 10, image=photo_text(b"jpeg2"), sid=[2, 0, 1],
                                          vector=[0.2] * 8, embedding=[0.0, 1.0], tokenizer=TOKENIZER)])
    events.send(event("click", "u3", "new-1", ts=ts + 11))
    events.close()
    producer.close()
    w = run_until_idle(s, t, "catalogw-1")
    (u3,) = user_features(store, ["u3"])
    assert u3["short_sids"] == [[2, 0, 1]] and w.stats["dlq"] == 0


def test_the_session_worker_knows_launched_items_too(services):
    s = isolated(services, "catalogs", db=4)
    producer = kafka_producer(s)
    send_changes(producer, s, [added("new-2", [0, 1, 2])])
    producer.close()
    events = EventProducer(s)
    events.send(event("exposure", "u9", "new-2", ts=EPOCH_MS, request_id="r9", position=0))
    events.send(event("click", "u9", "new-2", ts=EPOCH_MS + 1, request_id="r9", position=0))
    events.close()
    w = SessionWorker(s, table(), WorkerConfig(role="sessions", group="catalogs-1", session_idle_s=0.5))
    w.run(max_idle_s=4, install_signals=False)
    assert w.stats["applied"] == 2 and w.stats["sessions"] == 1 and w.table.sid("new-2") == [0, 1, 2]


def test_a_running_worker_reads_the_catalog_before_calling_an_item_unknown(services, monkeypatch):
    """The regular catalog poll is off here: only the catch-up on an unknown item can find the launch."""
    import threading
    import time

    import streaming.event_worker

    monkeypatch.setattr(streaming.event_worker, "CATALOG_POLL_S", 3600.0)
    s = isolated(services, "catalogr", db=5)
    w = FeatureWorker(s, table(), WorkerConfig(group="catalogr-1"))  # it reads the (empty) catalog at start
    runner = threading.Thread(target=w.run, kwargs={"max_idle_s": 6, "install_signals": False})
    runner.start()
    time.sleep(2)
    producer = kafka_producer(s)
    send_changes(producer, s, [added("new-3", [1, 2, 3])])
    producer.close()
    events = EventProducer(s)
    events.send(event("click", "u5", "new-3", ts=EPOCH_MS))
    events.close()
    runner.join(60)
    assert w.stats["applied"] == 1 and w.stats["dlq"] == 0 and w.table.sid("new-3") == [1, 2, 3]
