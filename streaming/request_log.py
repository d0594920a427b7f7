"""What each search request saw, kept for the near-streaming DPO job.

A session log (`streaming.sessionizer`) says what was shown, clicked and bought, but not what the
photo looked like: the job must train on the query's visual tokens and on the user features the
model actually read. Serving writes them here, keyed by request id, right after it answers:
V's grid (float16) and embedding (float32) as the generator read them, the Feast features it
used, the variant and model version. Redis holds them with a time to live (a request whose
session has not closed by then is of no use to training any more).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infra.settings import RedisSettings, redis_client

KEY = "ov:requests:{}"
TTL_S = 2 * 24 * 3600


def _pack(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _unpack(d: dict) -> np.ndarray:
    if d["dtype"] not in ("float16", "float32"):
        raise ValueError(f"unexpected array dtype {d['dtype']!r} in a request context")
    return np.frombuffer(base64.b64decode(d["data"]), dtype=d["dtype"]).reshape(d["shape"])


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
        return json.dumps({"request_id": self.request_id, "user_id": self.user_id, "scene": self.scene, "ts": self.ts,
                           "variant": self.variant, "model_version": self.model_version,
                           "user": {"short_sids": self.user.get("short_sids") or [],
                                    "long_sid": self.user.get("long_sid") or []},
                           "grid": _pack(self.grid.astype(np.float16)),
                           "embedding": _pack(self.embedding.astype(np.float32))},
                          separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "RequestContext":
        d = json.loads(raw)
        return cls(d["request_id"], d["user_id"], d["scene"], int(d["ts"]), d["variant"], d["model_version"], d["user"],
                   _unpack(d["grid"]), _unpack(d["embedding"]))


class RequestLog:
    """Request contexts in Redis (`ov:requests:<request id>`, expiring after `ttl_s`)."""

    def __init__(self, client, ttl_s: int = TTL_S):
        self.redis, self.ttl_s = client, ttl_s

    @classmethod
    def from_settings(cls, settings: RedisSettings, ttl_s: int = TTL_S) -> "RequestLog":
        return cls(redis_client(settings, socket_timeout=10, socket_connect_timeout=2), ttl_s)

    def put(self, contexts: Sequence[RequestContext]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for c in contexts:
            pipe.set(KEY.format(c.request_id), c.to_bytes(), ex=self.ttl_s)
        pipe.execute()

    def get(self, request_ids: Sequence[str]) -> list[RequestContext | None]:
        """The contexts of these requests, None where none was logged (or it expired)."""
        if not request_ids:
            return []
        raw = self.redis.mget([KEY.format(r) for r in request_ids])
        return [RequestContext.from_bytes(r) if r is not None else None for r in raw]
