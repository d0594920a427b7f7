"""Background workers: started with the caller's settings, report themselves, drain the topic,
show up in `stream status`, and stop cleanly; foreground workers all stop on TERM or Ctrl-C; a
worker process runs its own entry point with the config it was given."""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest

from infra import services as svc
from infra.process import config_from_argv, pid_alive
from onevision.behaviour.long_term import LongTermConfig
from streaming.launch import run_workers, start_workers, stop_workers, worker_argv
from streaming.replay import replay
from streaming.run_worker import WorkerRun
from streaming.status import stream_status
from streaming.synthetic import synthetic_events, synthetic_table
from streaming.worker import FeatureWorker, SessionWorker, WorkerConfig, worker_for


def setup(services, tmp_path, name: str):
    """(settings with topics of their own and state under tmp_path, an item table, its parquet file)."""
    k = services.kafka.model_copy(update={"events_topic": f"{name}.events", "dlq_topic": f"{name}.dlq",
                                          "sessions_topic": f"{name}.sessions"})
    s = services.model_copy(update={"kafka": k, "state_dir": tmp_path})
    svc.ensure_topics(s)
    table = synthetic_table(n_items=100, dim=8)
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": table.item_ids, "sid": list(table.sids), "vector": list(table.vectors)}).to_parquet(path)
    return s, table, path


def test_start_status_stop(services, tmp_path):
    s, table, path = setup(services, tmp_path, "launch")
    rows = start_workers(s, path, features=1, sessions=1)
    try:
        assert [r["name"] for r in rows] == ["stream-features-0", "stream-sessions-0"]
        assert all(r["healthy"] for r in rows)
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


def test_a_worker_process_runs_its_own_entry_point_with_the_config_it_was_given(tmp_path):
    argv = worker_argv(tmp_path / "items.parquet", role="sessions", long_term="onesearch", group="g",
                       log_level="WARNING", session_idle_s=5.0)
    assert argv[1:4] == ["-m", "streaming.run_worker", "--config"] and "onevision_cli" not in " ".join(argv)
    config = WorkerConfig(role="sessions", group="g", long_term=LongTermConfig(mode="onesearch"), session_idle_s=5.0)
    assert config_from_argv(WorkerRun, argv[3:]) == WorkerRun(tmp_path / "items.parquet", config, log_level="WARNING")
    assert config.worker_id == ""  # each process names itself (<host>-<pid>, what the launcher's health check reads)


def test_each_role_has_its_class(services):
    table = synthetic_table(n_items=10, dim=8)
    with pytest.raises(ValueError, match="role must be one of"):
        worker_for(services, table, WorkerConfig(role="bogus"))
    with pytest.raises(ValueError, match="worker_for picks"):
        FeatureWorker(services, table, WorkerConfig(role="sessions"))
    w = worker_for(services, table, WorkerConfig(role="sessions", group="role-test"))
    try:
        assert type(w) is SessionWorker and w.config.group == "role-test" and w.config.worker_id
    finally:
        w.close()


def test_foreground_workers_all_stop_on_term(services, tmp_path):
    s, _, path = setup(services, tmp_path, "fg")
    seen = []

    def started(rows):
        seen.extend(rows)
        os.kill(os.getpid(), signal.SIGTERM)  # as a supervisor stopping `stream run`

    previous = signal.getsignal(signal.SIGTERM)
    assert run_workers(s, path, features=1, sessions=1, started=started) == 0
    assert [r["name"] for r in seen] == ["stream-features-0", "stream-sessions-0"] and all(r["healthy"] for r in seen)
    assert not any(pid_alive(r["pid"]) for r in seen) and stop_workers(s) == []
    assert signal.getsignal(signal.SIGTERM) is previous
