"""Real broker and Redis: produce and consume through a consumer group, write and read Redis."""

import json
import uuid

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.settings import redis_client

pytestmark = pytest.mark.integration


def test_topics_exist_with_their_partition_counts(services):
    consumer = KafkaConsumer(**services.kafka.client_options())
    try:
        for topic in (services.kafka.events_topic, services.kafka.dlq_topic, services.kafka.sessions_topic):
            assert consumer.partitions_for_topic(topic) == set(range(services.kafka.partitions))
    finally:
        consumer.close()


def test_produce_and_consume_through_a_consumer_group(services):
    topic = services.kafka.events_topic
    run = uuid.uuid4().hex[:8]
    producer = KafkaProducer(**services.kafka.client_options(),
                             key_serializer=str.encode, value_serializer=lambda v: json.dumps(v).encode())
    sent = [{"run": run, "user_id": f"u{k % 7}", "seq": k} for k in range(60)]
    for ev in sent:
        producer.send(topic, key=ev["user_id"], value=ev)
    producer.flush()
    producer.close()

    group = f"test-{run}"
    consumer = KafkaConsumer(topic, **services.kafka.client_options(), group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15_000,
                             value_deserializer=lambda b: json.loads(b))
    got = []
    for msg in consumer:
        if msg.value.get("run") == run:
            got.append((msg.partition, msg.value))
        if len(got) == len(sent):
            break
    assert consumer.assignment() == {TopicPartition(topic, p) for p in range(services.kafka.partitions)}
    consumer.commit()
    committed = {tp: consumer.committed(tp) for tp in consumer.assignment()}
    consumer.close()

    assert sorted(v["seq"] for _, v in got) == list(range(60))
    # key = user_id keeps each user on one partition, in order
    by_user = {}
    for part, v in got:
        by_user.setdefault(v["user_id"], []).append((part, v["seq"]))
    for rows in by_user.values():
        assert len({p for p, _ in rows}) == 1
        assert [s for _, s in rows] == sorted(s for _, s in rows)
    assert sum(o or 0 for o in committed.values()) >= 60

    # the committed offsets hold: the same group sees nothing new
    again = KafkaConsumer(topic, **services.kafka.client_options(), group_id=group,
                          auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=6_000)
    assert [m for m in again if json.loads(m.value).get("run") == run] == []
    again.close()


def test_redis_requires_the_password_the_settings_carry(services):
    """The session's Redis refuses a client without the password, and `redis_client` brings it."""
    assert services.redis.password is not None and "@" not in services.redis.url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(services.redis.url).ping()
    with redis_client(services.redis) as client:
        assert client.ping()


def test_the_bootstrap_list_names_two_addresses(services):
    assert len(services.kafka.servers) == 2
    assert services.kafka.client_options()["bootstrap_servers"] == services.kafka.servers


def test_redis_write_and_read(services):
    client = redis_client(services.redis)
    client.hset("onevision:test:user:u1", mapping={"short_sids": "1,2,3", "long_sid": "4,5,6"})
    assert client.hgetall("onevision:test:user:u1") == {b"short_sids": b"1,2,3", b"long_sid": b"4,5,6"}
    pipe = client.pipeline()
    for k in range(1000):
        pipe.set(f"onevision:test:k{k}", k)
    pipe.execute()
    assert int(client.get("onevision:test:k999")) == 999
    client.close()
