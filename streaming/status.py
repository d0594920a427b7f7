"""What `onevision stream status` shows: lag per partition (Kafka-committed and the
authoritative Redis-stored offsets), each worker's rate and freshness, and the DLQ count."""

from __future__ import annotations

import json
import time

import redis
from kafka import KafkaConsumer, TopicPartition

from infra.settings import Settings
from streaming.worker_config import DEFAULT_GROUP, namespace


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
    consumer = KafkaConsumer(bootstrap_servers=k.bootstrap_servers, group_id=group, enable_auto_commit=False,
                             receive_message_max_bytes=64 * 1024 * 1024)
    r = redis.Redis.from_url(settings.redis.url, socket_timeout=5)
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
        workers = []
        for raw in r.hgetall(f"{ns}:workers").values():
            w = json.loads(raw)
            w["alive"] = now - w["updated_ms"] < 60_000
            workers.append(w)
    finally:
        consumer.close()
    return {"group": group, "partitions": partitions, "lag": sum(p["lag"] for p in partitions),
            "dlq": dlq, "sessions": sessions, "workers": sorted(workers, key=lambda w: w["worker_id"])}
