"""What each search request saw, kept for the near-streaming DPO job.

A session log (`streaming.sessionizer`) says what was shown, clicked and bought, but not what the
photo looked like: the job must train on the query's visual tokens and on the user features the
model actually read. Serving produces them to the Kafka topic `kafka.requests_topic`, keyed by
user, right after it answers: V's grid (float16) and embedding (float32) as the generator read
them, the user SIDs it used, the variant and model version, as one safetensors blob (about 11.6 KB
for a 16 x 320 grid, against 14 KB as the JSON and base64 it was). Nothing of it is kept in Redis,
so nothing there grows with traffic; the DPO job joins contexts with the closed sessions in a
bounded window (`ContextJoin`), and the topic's retention bounds the broker's share.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from infra.settings import Settings

log = logging.getLogger(__name__)
JOIN_WINDOW_S = 3600.0  # how far behind the latest session end a context is kept (sessions last minutes)
MAX_CONTEXTS = 50_000  # about 600 MB of contexts held for the join at most


@dataclass
class RequestContext:
    request_id: str
    user_id: str
    scene: str
    ts: int  # ms, when the request was answered
    variant: str
    model_version: str
    user: dict  # the Feast features the model read: short_sids (code lists, newest first), long_sid
    grid: np.ndarray  # (T, 320) float16: V's token grid of the photo
    embedding: np.ndarray  # (D,) float32: V's embedding of the photo

    def to_bytes(self) -> bytes:
        meta = {"request_id": self.request_id, "user_id": self.user_id, "scene": self.scene, "ts": str(self.ts),
                "variant": self.variant, "model_version": self.model_version,
                "user": json.dumps({"short_sids": self.user.get("short_sids") or [],
                                    "long_sid": self.user.get("long_sid") or []}, separators=(",", ":"))}
        return st_save({"grid": np.ascontiguousarray(self.grid, dtype=np.float16),
                        "embedding": np.ascontiguousarray(self.embedding, dtype=np.float32)}, metadata=meta)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "RequestContext":
        """Parse a context; raises ValueError on anything that is not one (a safetensors header
        names only tensors and strings: nothing is unpickled)."""
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8:8 + header_len])["__metadata__"]
            grid, embedding = tensors["grid"], tensors["embedding"]
            if grid.dtype != np.float16 or embedding.dtype != np.float32:
                raise ValueError(f"unexpected dtypes {grid.dtype}, {embedding.dtype}")
            if grid.ndim != 2 or embedding.ndim != 1 or not grid.size or not embedding.size:
                raise ValueError(f"unexpected shapes {grid.shape}, {embedding.shape}")
            user = json.loads(meta["user"])
            sids = [user.get("long_sid", []), *user.get("short_sids", [])]
            if not all(isinstance(s, list) and all(isinstance(c, int) for c in s) for s in sids):
                raise ValueError("user SIDs must be lists of ints")
            return cls(meta["request_id"], meta["user_id"], meta["scene"], int(meta["ts"]), meta["variant"],
                       meta["model_version"], user, grid, embedding)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors' own error, a missing key: all mean "not a context"
            raise ValueError(f"not a request context: {type(exc).__name__}: {exc}") from None


class RequestLog:
    """The producer side: contexts to the requests topic, keyed by user (so a user's contexts keep
    their order, like their events)."""

    def __init__(self, producer, topic: str):
        self.producer, self.topic = producer, topic

    @classmethod
    def for_settings(cls, producer, settings: Settings) -> "RequestLog":
        return cls(producer, settings.kafka.requests_topic)

    def put(self, contexts: Sequence[RequestContext]) -> list:
        """Send the contexts; returns the producer's futures (a failed delivery shows on them)."""
        return [self.producer.send(self.topic, key=c.user_id.encode(), value=c.to_bytes()) for c in contexts]


class ContextLag(RuntimeError):
    """The requests topic could not be read to its end in time (a stuck broker): the job stops
    rather than judge sessions contextless, and resumes from its published offsets."""


class ContextJoin:
    """The consumer side, for the DPO job: every partition of the requests topic read into a bounded
    window where closed sessions find their request's context.

    - `catch_up` reads each partition to the end it had when the call began (then one more poll,
      since the embedded broker reports the last batch's start as the end), so every context
      produced before a session was read is held unless the window dropped it; a broker that does
      not deliver within `max_s` raises `ContextLag`.
    - The window follows the sessions, not the newest context: contexts older than the sessions'
      watermark (the latest session end read, `observe`) minus `window_s` go; so does the oldest
      beyond `max_contexts` (memory's bound: size it above the request rate x (session length +
      the job's lag)). A job that lags behind the requests topic therefore keeps what its sessions
      need, and after a restart it rebuilds the same window at the same sessions.
    - `resume_offsets` names, per partition, the oldest context still held (or the read position
      when none is): recorded with a version's offsets, `seek` there brings back every context a
      session after them can need (unless the cap had dropped it)."""

    def __init__(self, settings: Settings, window_s: float = JOIN_WINDOW_S, max_contexts: int = MAX_CONTEXTS,
                 group_hint: str = "onevision-dpo"):
        from kafka import KafkaConsumer, TopicPartition

        self.topic, self.max_contexts = settings.kafka.requests_topic, max_contexts
        self.window_ms = int(window_s * 1000)
        self.consumer = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False,
                                      auto_offset_reset="earliest", client_id=f"{group_hint}-contexts",
                                      max_partition_fetch_bytes=8 * 1024 * 1024)
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        if not parts:
            raise ValueError(f"no topic {self.topic!r}: run `onevision infra up` (it creates the topics)")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        self.held: dict[str, tuple[RequestContext, int, int]] = {}  # request id -> (context, partition, offset)
        self.watermark = 0  # ms: the latest session end the job has read
        self.counts = {"read": 0, "malformed": 0, "expired": 0, "evicted": 0}

    def seek(self, offsets: dict[int, int]) -> None:
        """Read from these offsets (partition -> offset); partitions not named from the start."""
        self.held.clear()
        for tp in self.partitions:
            if tp.partition in offsets:
                self.consumer.seek(tp, int(offsets[tp.partition]))
            else:
                self.consumer.seek_to_beginning(tp)

    def observe(self, session_end_ms: int) -> None:
        """Sessions up to this end time (ms) have been read: the window may move on to it."""
        self.watermark = max(self.watermark, int(session_end_ms))

    def catch_up(self, max_s: float = 60.0, heartbeat=None) -> int:
        """Read every partition to its end as of now; returns how many contexts were read.
        `heartbeat` (a callable) runs between polls: the job renews its lease there."""
        ends = self.consumer.end_offsets(self.partitions)
        n, deadline = 0, time.monotonic() + max_s
        while any(self.consumer.position(tp) < ends[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise ContextLag(f"{self.topic} not read to its end within {max_s:.0f} s")
            n += self._poll(500)
            if heartbeat is not None:
                heartbeat()
        return n + self._poll(100)  # the last batch, where the broker reports its start as the end

    def _poll(self, timeout_ms: int) -> int:
        n = 0
        for tp, msgs in self.consumer.poll(timeout_ms=timeout_ms, max_records=2000).items():
            for m in msgs:
                n += self._add(m.value, tp.partition, m.offset)
        self._bound()
        return n

    def _add(self, raw: bytes, partition: int, offset: int) -> int:
        try:
            ctx = RequestContext.from_bytes(raw)
        except ValueError as exc:
            self.counts["malformed"] += 1
            log.warning("request context at %s/%d@%d skipped: %s", self.topic, partition, offset, exc)
            return 0
        self.held.pop(ctx.request_id, None)
        self.held[ctx.request_id] = (ctx, partition, offset)
        self.counts["read"] += 1
        return 1

    def _bound(self) -> None:
        """Drop what fell out of the window behind the sessions, then the oldest beyond the cap."""
        if self.watermark:
            floor = self.watermark - self.window_ms
            for rid in [rid for rid, (ctx, _, _) in self.held.items() if ctx.ts < floor]:
                del self.held[rid]
                self.counts["expired"] += 1
        excess = len(self.held) - self.max_contexts
        if excess > 0:  # partitions interleave: the oldest by request time, not by arrival
            for rid in sorted(self.held, key=lambda r: self.held[r][0].ts)[:excess]:
                del self.held[rid]
            self.counts["evicted"] += excess

    def get(self, request_ids: Sequence[str]) -> list[RequestContext | None]:
        """The held contexts of these requests, None where none is held (never logged, or out of the window)."""
        return [self.held[r][0] if r in self.held else None for r in request_ids]

    def resume_offsets(self) -> dict[int, int]:
        """Per partition: the oldest held context's offset, else the next offset to read."""
        out = {tp.partition: self.consumer.position(tp) for tp in self.partitions}
        for _, partition, offset in self.held.values():
            out[partition] = min(out[partition], offset)
        return out

    def close(self) -> None:
        self.consumer.close()
