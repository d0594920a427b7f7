"""What the service logs after each answer, off the request path: the request's context for the
DPO job (`streaming.request_log`, a Kafka topic), then one exposure event per shown item to Kafka.

Bounded, so that a broker or Redis outage never grows memory or slows answers: at most
`max_pending` answers wait for their log; beyond that, and whenever the producer's own buffer is
full (its `send` gives up after the producer's `max_block_ms`) or a delivery fails, exposures
are dropped and counted (`onevision_exposures_dropped`). A context that cannot be stored costs
the DPO job one example, never the exposures.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter

from streaming.producer import EventProducer, event, now_ms
from streaming.request_log import RequestContext, RequestLog

log = logging.getLogger("ray.serve")
MAX_PENDING = 512


@dataclass(frozen=True)
class Answered:
    """One answered search, as the logs need it."""

    request_id: str
    user_id: str
    scene: str
    variant: str
    experiment: str
    model_version: str
    items: list[str]  # shown, in position order
    prices: list[float | None]
    user: dict  # the features the model read
    visual: Any = None  # the photo's visual tokens, when the variant's model computed them


class ExposureLog:
    def __init__(self, producer: EventProducer, request_log: RequestLog, metrics: CollectorRegistry,
                 max_pending: int = MAX_PENDING):
        self.producer, self.request_log, self.max_pending = producer, request_log, max_pending
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="exposures")
        self.pending, self.lock = 0, threading.Lock()
        self.dropped = Counter("onevision_exposures_dropped",
                               "exposures not produced: buffer full, broker unavailable or delivery failed",
                               registry=metrics)
        self.errors = Counter("onevision_exposure_errors", "answers whose exposures could not be produced",
                              registry=metrics)
        self.context_errors = Counter("onevision_request_context_errors",
                                      "answers whose request context (for the DPO job) could not be stored",
                                      registry=metrics)

    def submit(self, answered: Answered) -> None:
        """Queue the answer's logs; drop (and count) them when `max_pending` answers already wait."""
        with self.lock:
            if self.pending >= self.max_pending:
                self.dropped.inc(len(answered.items))
                return
            self.pending += 1
        self.thread.submit(self._log, answered).add_done_callback(self._done)

    def _done(self, task: Future) -> None:
        with self.lock:
            self.pending -= 1
        if not task.cancelled() and task.exception() is not None:
            self.errors.inc()
            log.error("exposures not logged: %s", task.exception())

    def _log(self, a: Answered) -> None:
        if a.visual is not None:
            try:
                (sent,) = self.request_log.put([RequestContext(a.request_id, a.user_id, a.scene, now_ms(), a.variant,
                                                               a.model_version, a.user, a.visual.tokens,
                                                               a.visual.embedding)])
                sent.add_errback(lambda _exc: self.context_errors.inc())
            except Exception as exc:  # noqa: BLE001 - any producer failure; counted and logged, serving goes on
                self.context_errors.inc()
                log.error("request context %s not logged: %s", a.request_id, exc)
        for pos, (item, price) in enumerate(zip(a.items, a.prices)):
            try:
                sent = self.producer.send(event("exposure", a.user_id, item, scene=a.scene, request_id=a.request_id,
                                                position=pos, price=price, variant=a.variant,
                                                experiment=a.experiment or None))
            except KafkaError as exc:  # the producer's buffer is full and the broker does not take more
                self.dropped.inc(len(a.items) - pos)
                log.warning("exposures of %s dropped: %s", a.request_id, exc)
                return
            sent.add_errback(lambda _exc: self.dropped.inc())
