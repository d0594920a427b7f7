"""What `onevision stream status` shows: lag per partition (Kafka-committed and the
authoritative Redis-stored offsets), each worker's rate and freshness, and the DLQ count; and
`worker_liveness`, the cheap Redis-only answer to "which stream jobs are alive"."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import redis
from kafka import KafkaConsumer, TopicPartition

from infra.settings import Settings, redis_client
from streaming.groups import DEFAULT_GROUP, DPO_GROUP, ROLE_GROUPS, namespace, status_key

ALIVE_S = 15.0  # a job whose stats row is older than this is dead (a running one writes it every ~2 s)
FORGET_S = 3600.0  # rows older than this (workers long gone) are not shown
LIVENESS_FIELDS = ("worker_id", "pid", "host", "supervisor_pid", "state", "updated_ms")
NOT_STATS = {*LIVENESS_FIELDS, "ts", "age_s", "alive"}


def judged(row: dict, now_ms: float) -> dict | None:
    """`row` with `alive` (fresh and running) and `age_s`, or None when it is too old to show."""
    age_s = (now_ms - row.get("updated_ms", 0)) / 1000
    if age_s > FORGET_S:
        return None
    return {**row, "age_s": round(age_s, 1), "alive": age_s < ALIVE_S and row.get("state", "running") == "running"}


def worker_liveness(settings: Settings, client: redis.Redis | None = None,
                    groups: Mapping[str, str] = ROLE_GROUPS) -> list[dict]:
    """Every stream job seen within the hour (feature and session workers, the DPO job), with
    `role`, `group`, `alive`, `age_s`, pid, host, `supervisor_pid`, `state` and `stats` (the numbers
    its row reports: events, dead letters, events/s, freshness; the DPO job's versions and
    examples). It reads a Redis key per group and the DPO job's, and no Kafka, so health checks and
    metrics endpoints can call it per request, wherever the jobs run. `groups`: role -> the
    consumer group its workers run in (the roles' own groups unless they were started in others)."""
    r = client or redis_client(settings.redis, socket_timeout=2, socket_connect_timeout=2)  # a caller's own, reused
    with r.pipeline(transaction=False) as pipe:
        for group in groups.values():
            pipe.hvals(f"{namespace(group)}:workers")
        pipe.get(status_key(DPO_GROUP))
        *rows_of, dpo = pipe.execute()
    found = [(role, group, json.loads(raw)) for (role, group), rows in zip(groups.items(), rows_of)
             for raw in rows]
    if dpo:
        row = json.loads(dpo)
        found.append(("dpo", DPO_GROUP, {"worker_id": f"{row.get('host')}-{row.get('pid')}", **row}))
    now, out = time.time() * 1000, []
    for role, group, row in found:
        if (j := judged(row, now)) is not None:
            stats = {k: v for k, v in j.items() if k not in NOT_STATS and isinstance(v, int | float)
                     and not isinstance(v, bool)}
            out.append({"role": role, "group": group, "alive": j["alive"], "age_s": j["age_s"],
                        **{k: j.get(k) for k in LIVENESS_FIELDS}, "stats": stats})
    return sorted(out, key=lambda w: (w["role"], str(w["worker_id"])))


def end_offsets(consumer: KafkaConsumer, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (first offset, next offset to be written).

    The embedded Tansu broker answers "latest" with the base offset of the last record batch
    rather than the next offset, so the reported end is checked by reading from it: records
    found there move the end forward (on Kafka there are none and this costs one empty fetch)."""
    parts = sorted(consumer.partitions_for_topic(topic) or [])
    tps = [TopicPartition(topic, p) for p in parts]
    if not tps:
        return {}
    begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    true_end = dict(end)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, end[tp])
    for _ in range(20):
        got = consumer.poll(timeout_ms=300, max_records=100_000)
        if not got:
            break
        for tp, msgs in got.items():
            true_end[tp] = max(true_end[tp], msgs[-1].offset + 1)
    consumer.unsubscribe()
    return {tp.partition: (begin[tp], true_end[tp]) for tp in tps}


def stream_status(settings: Settings, group: str = DEFAULT_GROUP) -> dict:
    k = settings.kafka
    consumer = KafkaConsumer(**k.client_options(), group_id=group, enable_auto_commit=False,
                             receive_message_max_bytes=64 * 1024 * 1024)
    r = redis_client(settings.redis, socket_timeout=5)
    ns = namespace(group)
    try:
        events = end_offsets(consumer, k.events_topic)
        stored = r.hgetall(f"{ns}:offsets")
        partitions = []
        for p, (begin, end) in events.items():
            committed = consumer.committed(TopicPartition(k.events_topic, p))
            applied = int(stored.get(f"{k.events_topic}:{p}".encode(), begin))
            partitions.append({"partition": p, "end": end, "committed": committed, "applied": applied,
                               "lag": max(end - applied, 0)})
        dlq = sum(end - begin for begin, end in end_offsets(consumer, k.dlq_topic).values())
        sessions = sum(end - begin for begin, end in end_offsets(consumer, k.sessions_topic).values())
        now = time.time() * 1000
        workers, gone = [], []
        for worker_id, raw in r.hgetall(f"{ns}:workers").items():
            w = judged(json.loads(raw), now)
            if w is None:
                gone.append(worker_id)
            else:
                workers.append(w)
        if gone:  # workers that left over an hour ago: forget them
            r.hdel(f"{ns}:workers", *gone)
    finally:
        consumer.close()
    return {"group": group, "partitions": partitions, "lag": sum(p["lag"] for p in partitions),
            "dlq": dlq, "sessions": sessions, "workers": sorted(workers, key=lambda w: w["worker_id"])}
