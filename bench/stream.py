"""Benchmark: the streaming feature worker against its two peers, side by side in one run.

    python bench/stream.py                      # 200k events, freshness at 2k events/s
    python bench/stream.py --events 400000 --rate 2000 --seconds 30
    python bench/stream.py --smoke --out /tmp/bench     # 3k events, freshness at 500/s for 3 s

Starts an embedded broker and Redis on free ports, produces synthetic image-search traffic,
then measures on the same events:
- bare: a kafka-python consumer that only reads and JSON-decodes (the client's ceiling);
- ours: one FeatureWorker process (validate, dedup, short/long SIDs, item stats, sessions,
  one Redis transaction per flush, Kafka commit), events/s from first record to last flush;
- feast_push: Feast `push` once per event, the same feature rows, on a sample of events;
- freshness: a worker subprocess fed at a steady rate with fresh events; time from the
  producer's timestamp to the Redis commit that made the feature readable, p50/p99.
Writes <--out>/bench_stream.json and a PNG beside it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
from common import embedded_services, options, parse, save_figure, write_report
from kafka import KafkaConsumer

from features.client import feature_store
from infra.settings import Settings, redis_client
from onevision.items import sid_string
from streaming.launch import worker_argv
from streaming.replay import encode_events, replay
from streaming.status import end_offsets
from streaming.synthetic import synthetic_events, synthetic_table
from streaming.worker import FeatureWorker, WorkerConfig, namespace, tune_gc

SMOKE = {"events": 3_000, "push_sample": 50, "rate": 500, "seconds": 3.0}


def bare_consumer(settings: Settings, n: int) -> float:
    c = KafkaConsumer(settings.kafka.events_topic, **settings.kafka.client_options(),
                      group_id="bench-bare", auto_offset_reset="earliest", enable_auto_commit=False,
                      max_poll_records=5000, fetch_max_bytes=32 << 20, max_partition_fetch_bytes=8 << 20,
                      receive_message_max_bytes=64 << 20)
    seen, start = 0, None
    while seen < n:
        for msgs in c.poll(timeout_ms=200).values():
            start = start or time.perf_counter()
            for m in msgs:
                json.loads(m.value)
            seen += len(msgs)
    took = time.perf_counter() - start
    c.close()
    return seen / took


def ours(settings: Settings, table, n: int) -> tuple[float, dict]:
    w = FeatureWorker(settings, table, WorkerConfig(group="bench-ours"))
    tune_gc()  # as FeatureWorker.run does
    start = None
    while w.stats["events"] < n:
        got = w.step()
        if got and start is None:
            start = time.perf_counter() - 0.0
    w.flush(wait=True)
    took = time.perf_counter() - start
    snap = w.snapshot()
    w.close()
    return n / took, snap


def feast_push(settings: Settings, table, events: pd.DataFrame, sample: int) -> float:
    """Feast's own write path, one push per event, carrying the same user feature row (every
    field of the user view)."""
    store = feature_store(settings, backend="redis")
    ev = events.head(sample)
    start = time.perf_counter()
    for row in ev.itertuples():
        sid = table.sid(row.item_id)
        store.push("user_behaviour_push", pd.DataFrame({
            "user_id": [row.user_id], "short_sids": [[sid_string(sid)]], "long_sid": [sid],
            "recent_sids": [[sid_string(sid)]], "event_timestamp": [pd.Timestamp(row.ts, unit="ms", tz="UTC")]}))
    return sample / (time.perf_counter() - start)


def freshness(settings: Settings, table_path: Path, table, rate: int, seconds: float) -> dict:
    """A worker subprocess that starts at the end of the topic, fed `rate` fresh events/s."""
    group, topic = "bench-fresh", settings.kafka.events_topic
    ns = namespace(group)
    r = redis_client(settings.redis)
    probe = KafkaConsumer(**settings.kafka.client_options(), receive_message_max_bytes=64 << 20)
    r.hset(f"{ns}:offsets", mapping={f"{topic}:{p}": end for p, (_, end) in end_offsets(probe, topic).items()})
    probe.close()
    env = {**os.environ, **settings.to_env()}
    worker = subprocess.Popen(worker_argv(table_path, group=group, log_level="WARNING"), env=env)

    def applied() -> int:
        return sum(json.loads(v)["events"] for v in r.hgetall(f"{ns}:workers").values())

    try:
        warm = synthetic_events(table, min(2000, 2 * rate), seed=7, start_ms=int(time.time() * 1000))
        replay(settings, warm, rate=rate)
        deadline = time.time() + 90
        while applied() < len(warm) and time.time() < deadline:  # joined the group and caught up
            time.sleep(0.2)
        steady = synthetic_events(table, int(rate * seconds), seed=8, start_ms=int(time.time() * 1000))
        sent = replay(settings, steady, rate=rate)
        time.sleep(2)
        snap = json.loads(next(iter(r.hgetall(f"{ns}:workers").values())))
    finally:
        worker.terminate()
        worker.wait(30)
    return {"rate_target": rate, "rate_sent": sent["events_per_s"], "events": len(steady),
            "applied": snap["events"] - len(warm), "samples": "the worker's last 20,000 events",
            "p50_ms": snap["freshness_ms_p50"], "p99_ms": snap["freshness_ms_p99"]}


def main() -> None:
    ap = options(__doc__, data=False)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--push-sample", type=int, default=2_000)
    ap.add_argument("--rate", type=int, default=2_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = parse(ap, SMOKE)

    with embedded_services(partitions=4) as settings:
        table = synthetic_table(n_items=5000, dim=128)
        table_path = settings.state_dir / "item_sids.parquet"
        pd.DataFrame({"item_id": table.item_ids, "sid": list(table.sids),
                      "vector": list(table.vectors)}).to_parquet(table_path)
        events = synthetic_events(table, args.events, n_users=2000)
        print(f"producing {len(events):,} events ...", flush=True)
        produced = replay(settings, events)
        print("bare consumer ...", flush=True)
        bare = bare_consumer(settings, len(events))
        print(f"  {bare:,.0f} events/s\nours ...", flush=True)
        ours_rate, snap = ours(settings, table, len(events))
        print(f"  {ours_rate:,.0f} events/s\nfeast push per event ...", flush=True)
        push = feast_push(settings, table, events, args.push_sample)
        print(f"  {push:,.0f} events/s\nfreshness at {args.rate}/s ...", flush=True)
        fresh = freshness(settings, table_path, table, args.rate, args.seconds)
        print(f"  p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms", flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "events": len(events), "event_bytes_mean": round(sum(map(len, encode_events(events.head(1000)))) / 1000, 1),
        "produce_events_per_s": produced["events_per_s"],
        "bare_consumer_events_per_s": round(bare, 1),
        "ours_events_per_s": round(ours_rate, 1),
        "feast_push_per_event_events_per_s": round(push, 1),
        "ours_vs_bare": round(ours_rate / bare, 3),
        "ours_vs_feast_push": round(ours_rate / push, 1),
        "ours_worker": {k: snap[k] for k in ("applied", "dlq", "duplicates", "flushes", "sessions")},
        "freshness": fresh,
        "targets": {"ours_vs_bare_min": 0.7, "ours_events_per_s_min": 15000, "ours_vs_feast_push_min": 30,
                    "freshness_p99_ms_max": 1000},
    }
    report["pass"] = (report["ours_vs_bare"] >= 0.7 and ours_rate >= 15000 and report["ours_vs_feast_push"] >= 30
                      and fresh["p99_ms"] < 1000)
    print(json.dumps(report, indent=2))
    plot(report, write_report(args, "bench_stream.json", report).with_suffix(".png"))


def plot(report: dict, path: Path) -> None:
    """Events/s of the three readers (log scale) and freshness percentiles, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = ["bare consumer\n(read + json)", "OneVision worker\n(into Redis)", "Feast push\nper event"]
    rates = [report["bare_consumer_events_per_s"], report["ours_events_per_s"],
             report["feast_push_per_event_events_per_s"]]
    bars = a.bar(names, rates, color=["#999999", "#2a6fdb", "#d9822b"])
    a.set_yscale("log")
    a.set_ylabel("events/s (log)")
    a.bar_label(bars, [f"{r:,.0f}" for r in rates])
    a.set_title(f"throughput, {report['events']:,} events, one process")
    f = report["freshness"]
    bars = b.bar(["p50", "p99"], [f["p50_ms"], f["p99_ms"]], color="#2a6fdb")
    b.axhline(1000, color="red", linestyle="--", label="target p99")
    b.bar_label(bars, [f"{f['p50_ms']:.0f} ms", f"{f['p99_ms']:.0f} ms"])
    b.set_ylabel("produced -> readable (ms)")
    b.set_title(f"freshness at {f['rate_target']:,} events/s")
    b.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
