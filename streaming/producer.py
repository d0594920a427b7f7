"""Producing to OneVision's topics: one producer library for serving (exposures), the traffic
simulator and replays (clicks, orders), and the workers (dead letters, session logs).

Events are keyed by user_id so each user's events stay in one partition, in order.
"""

from __future__ import annotations

import time
import uuid

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from infra.settings import Settings
from streaming.schema import DeadLetter, Event, SessionLog


def kafka_producer(settings: Settings, **overrides) -> KafkaProducer:
    options = dict(**settings.kafka.client_options(), acks="all", linger_ms=5,
                   batch_size=256 * 1024, max_request_size=8 * 1024 * 1024, retries=10,
                   request_timeout_ms=30_000)
    options.update(overrides)
    return KafkaProducer(**options)


class EventProducer:
    """Sends events (models or already-encoded JSON) to `onevision.events`, keyed by user."""

    def __init__(self, settings: Settings, producer: KafkaProducer | None = None):
        self.settings = settings
        self.topic = settings.kafka.events_topic
        self.producer = producer or kafka_producer(settings)

    def send(self, event: Event | dict) -> FutureRecordMetadata:
        """Queue the event; the returned future resolves once the broker has it (or fails)."""
        if isinstance(event, dict):
            event = Event.model_validate(event)
        return self.producer.send(self.topic, key=event.user_id.encode(), value=event.to_json())

    def send_raw(self, user_id: str, value: bytes) -> None:
        """An already-encoded event (replays; tests that need malformed bytes on the topic)."""
        self.producer.send(self.topic, key=user_id.encode(), value=value)

    def flush(self, timeout: float | None = 30) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


def send_dead_letter(producer: KafkaProducer, settings: Settings, letter: DeadLetter) -> None:
    producer.send(settings.kafka.dlq_topic, key=letter.key.encode() if letter.key else None,
                  value=letter.model_dump_json().encode())


def send_session(producer: KafkaProducer, settings: Settings, log: SessionLog) -> None:
    producer.send(settings.kafka.sessions_topic, key=log.user_id.encode(),
                  value=log.model_dump_json(by_alias=True).encode())


def now_ms() -> int:
    return int(time.time() * 1000)


def event(type: str, user_id: str, item_id: str, ts: int | None = None, scene: str = "image_search",
          request_id: str | None = None, position: int | None = None, price: float | None = None,
          event_id: str | None = None, variant: str | None = None, experiment: str | None = None) -> Event:
    """A schema-1 event with a fresh id and the current time unless given."""
    return Event.model_validate({
        "schema": 1, "event_id": event_id or uuid.uuid4().hex, "type": type, "ts": now_ms() if ts is None else ts,
        "user_id": user_id, "item_id": item_id, "scene": scene, "request_id": request_id,
        "position": position, "price": price, "variant": variant, "experiment": experiment})


__all__ = ["EventProducer", "event", "kafka_producer", "now_ms", "send_dead_letter", "send_session"]
