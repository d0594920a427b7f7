"""Background workers: started with the caller's settings, report themselves, drain the topic,
show up in `stream status`, and stop cleanly."""

from __future__ import annotations

import time

import pandas as pd

from infra import services as svc
from streaming.launch import start_workers, stop_workers
from streaming.replay import replay
from streaming.status import stream_status
from streaming.synthetic import synthetic_events, synthetic_table


def test_start_status_stop(services, tmp_path):
    k = services.kafka.model_copy(update={"events_topic": "launch.events", "dlq_topic": "launch.dlq",
                                          "sessions_topic": "launch.sessions"})
    s = services.model_copy(update={"kafka": k, "state_dir": tmp_path})
    svc.ensure_topics(s)
    table = synthetic_table(n_items=100, dim=8)
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": table.item_ids, "sid": list(table.sids), "vector": list(table.vectors)}).to_parquet(path)
    rows = start_workers(s, path, features=1, sessions=1)
    try:
        assert [r["name"] for r in rows] == ["stream-features-0", "stream-sessions-0"] and all(r["healthy"] for r in rows)
        events = synthetic_events(table, 3000, n_users=50, seed=2)
        replay(s, events)
        deadline = time.time() + 90
        while time.time() < deadline:
            st = stream_status(s)
            if sum(p["applied"] for p in st["partitions"]) == len(events):
                break
            time.sleep(0.5)
        assert st["lag"] == 0 and sum(p["end"] for p in st["partitions"]) == len(events)
        assert [w["alive"] for w in st["workers"]] == [True] and st["workers"][0]["events"] == len(events)
        deadline = time.time() + 90  # the sessionizer closes sessions after 60 s idle at the latest
        while stream_status(s, "onevision-sessions")["sessions"] == 0 and time.time() < deadline:
            time.sleep(1)
        assert stream_status(s, "onevision-sessions")["sessions"] > 0
    finally:
        assert sorted(stop_workers(s)) == ["stream-features-0", "stream-sessions-0"]
    assert stop_workers(s) == []
