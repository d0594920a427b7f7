"""The consumer-group member both Kafka jobs are built on (the feature and session workers, the
near-streaming DPO job): the run loop and its signals, dead letters, liveness stats, the Kafka
offset commit and the rebalance listener.

Each job keeps its offsets in its own store (Redis, the model registry), writes them together
with what it made of the records, and seeks to them on assignment. The Kafka commit only follows
that store, so a failed commit costs a re-read, never a loss or a second application.
"""

from __future__ import annotations

import abc
import logging
import os
import signal
import socket
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from infra.settings import Settings
from infra.supervise import SUPERVISOR_ENV
from streaming.producer import kafka_producer, send_dead_letter
from streaming.schema import DeadLetter

log = logging.getLogger(__name__)


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None


class ConsumerJob(ConsumerRebalanceListener):
    """Subclasses set up their state, then call `__init__` (it joins `group` on `topic`; `run`
    says "alive" once its stop signals are installed), implement `tick`, `write_stats` and the
    rebalance callbacks, and may refine `idle_done` (when an idle job may stop), `drain` (what the
    loop writes out when it ends) and `settle` (what must finish before closing)."""

    offsets_home = "the job's store"  # where the authoritative offsets live (for the log)
    stats_every_s = 2.0  # an idle job still says "alive" this often (`stream status` trusts rows for 15 s)

    def __init__(self, settings: Settings, topic: str, group: str, **consumer_options) -> None:
        self.settings, self.topic = settings, topic
        self._stop = threading.Event()
        self.state = "running"  # "stopped" after a clean exit, "failed" after a crash
        self.producer = kafka_producer(settings)
        self.consumer = KafkaConsumer(**settings.kafka.client_options(), group_id=group,
                                      enable_auto_commit=False, auto_offset_reset="earliest", **consumer_options)
        self.consumer.subscribe([topic], listener=self)
        self._published = float("-inf")  # said nothing yet: the first `stats_due` is True

    # ---- what a job defines -------------------------------------------------------------------
    @abc.abstractmethod
    def tick(self) -> None:
        """One round of polling and work; `active` when it consumed something."""

    def idle_done(self) -> bool:
        """Whether a job idle for `max_idle_s` may stop now (nothing half-done)."""
        return True

    def drain(self) -> None:
        """Write out what was read when the loop ends (before `close`)."""

    def settle(self) -> None:
        """Finish what is in flight before the job closes."""

    @abc.abstractmethod
    def write_stats(self) -> None:
        """Write the job's stats where operators and launchers look."""

    # ---- the loop -----------------------------------------------------------------------------
    def run(self, max_idle_s: float | None = None, install_signals: bool = True) -> None:
        """Consume until stopped (SIGTERM/SIGINT) or, with `max_idle_s`, until that long without
        records and `idle_done`; then drain and close. When the loop dies of an exception the
        job closes without draining: a half-done batch is never stored, so a restart reads it
        again from the stored offsets and applies it exactly once."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        self.publish_stats()  # "alive" (a launcher's health check): a TERM from now on is a clean stop
        self.active()
        try:
            while not self._stop.is_set():
                self.tick()
                if max_idle_s is not None and time.monotonic() - self._active > max_idle_s and self.idle_done():
                    break
            self.drain()
        except BaseException:
            self.close(clean=False)
            raise
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self, clean: bool = True) -> None:
        """Close the job; `clean` first lets what is in flight finish (`settle`). The last stats
        row says "stopped" (or "failed"), so nobody mistakes the job for alive."""
        self.state = "stopped" if clean else "failed"
        try:
            if clean:
                self.settle()
            self.publish_stats()
            self.consumer.close(autocommit=False)  # the offsets are committed where they are stored
        finally:
            self.producer.flush()
            self.producer.close()

    # ---- shared pieces ------------------------------------------------------------------------
    def active(self) -> None:
        """Restart the idle clock (the job consumed something)."""
        self._active = time.monotonic()

    def publish_stats(self) -> None:
        self._published = time.monotonic()
        self.write_stats()

    def liveness(self) -> dict:
        """What every stats row carries for `stream status` and launchers: who runs the job (its
        supervisor's pid too, the pid a launcher knows) and whether it still runs."""
        supervisor = os.environ.get(SUPERVISOR_ENV)
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "supervisor_pid": int(supervisor) if supervisor else None, "state": self.state,
                "updated_ms": int(time.time() * 1000)}

    def stats_due(self) -> bool:
        """Nothing said "alive" for `stats_every_s`."""
        return time.monotonic() - self._published > self.stats_every_s

    def dead_letter(self, m: ConsumerRecord, reason: str, detail: str) -> DeadLetter:
        """The dead letter of a record this job cannot use, with its place in the log and its bytes."""
        return DeadLetter(reason=reason, detail=detail, topic=m.topic, partition=m.partition, offset=m.offset,
                          key=_text(m.key), raw=_text(m.value) or "")

    def send_dead_letter(self, letter: DeadLetter) -> None:
        send_dead_letter(self.producer, self.settings, letter)

    def seek_stored(self, assigned, stored: dict[int, int | None], rebuild_missing: bool) -> None:
        """Seek each assigned partition to the offset the job stored; one without a stored offset
        reads from the start of the topic (`rebuild_missing`) or from the group's Kafka offset."""
        for tp in assigned:
            offset = stored.get(tp.partition)
            if offset is not None:
                self.consumer.seek(tp, offset)
            elif rebuild_missing:
                self.consumer.seek_to_beginning(tp)

    def past_log_end(self, stored: dict[int, int], wait_s: float = 3.0) -> dict[int, int]:
        """The stored offsets that lie past their partition's log end (partition -> that end): the
        topic was made again (a broker that lost its data, a topic deleted and recreated), so its
        records are new ones that the stored offset would skip. Only a positive proof counts: the
        log's end (`streaming.status.end_offsets`) is below the stored offset AND no record at the
        stored offset - 1 arrives within `wait_s`; a probe that fails proves nothing, and then the
        stored offsets stand (replaying a partition would count it twice)."""
        from streaming.status import end_offsets

        if not stored:
            return {}
        try:
            probe = KafkaConsumer(**self.settings.kafka.client_options(), enable_auto_commit=False,
                                  request_timeout_ms=15_000)
            try:
                ends = end_offsets(probe, self.topic)
                suspects = {p: ends[p][1] for p, o in stored.items() if p in ends and o > ends[p][1]}
                return {p: end for p, end in suspects.items() if not self._has_record(probe, p, stored[p] - 1, wait_s)}
            finally:
                probe.close()
        except Exception as err:  # noqa: BLE001 - the broker is in trouble: keep the stored offsets
            log.warning("could not check the logs' ends (%s); keeping the stored offsets", type(err).__name__)
            return {}

    def _has_record(self, probe: KafkaConsumer, partition: int, offset: int, wait_s: float) -> bool:
        tp = TopicPartition(self.topic, partition)
        probe.assign([tp])
        probe.seek(tp, offset)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if probe.poll(timeout_ms=500, max_records=1):
                return True
        return False

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit partition -> next offset to Kafka, after the job stored them."""
        if not offsets:
            return
        try:
            self.consumer.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                                  for p, o in offsets.items()})
        except Exception as err:  # the job's store holds the truth; a failed commit only costs a re-read
            log.warning("Kafka offset commit failed (%s); the offsets in %s stay authoritative", err, self.offsets_home)
