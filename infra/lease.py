"""A lease in Redis: at most one holder of a name at a time, for jobs that must not run twice
(two DPO jobs on one model would race on its versions and CURRENT).

`SET key token NX PX ttl` takes it; the holder renews it on every round of work, so a holder
that dies loses it after `ttl_s`; release and renewal compare the token first (Lua), so a holder
whose lease lapsed and was taken can never remove or extend the new holder's.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

import redis

# renew: extend our lease, or take it again if it lapsed and nobody took it meanwhile
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseHeld(RuntimeError):
    """Another process holds the lease; the message names it."""


@dataclass
class Lease:
    client: redis.Redis
    key: str
    ttl_s: float = 30.0
    token: str = ""

    def __post_init__(self) -> None:
        self.token = self.token or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> None:
        """Take the lease, waiting up to `wait_s` for the holder to release it or lapse; raises
        `LeaseHeld` naming the holder otherwise."""
        deadline = time.monotonic() + wait_s
        while not self.client.set(self.key, self.token, nx=True, px=self._ttl_ms):
            left = deadline - time.monotonic()
            if left <= 0:
                holder = self.holder() or "a holder that just left"
                raise LeaseHeld(f"{self.key} is held by {holder} (waited {wait_s:g} s)")
            time.sleep(min(poll_s, left))

    def renew(self) -> bool:
        """Extend the lease (or take it again when it lapsed unclaimed); False once another holds it."""
        return bool(self.client.eval(_RENEW, 1, self.key, self.token, self._ttl_ms))

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        self.client.eval(_RELEASE, 1, self.key, self.token)

    def holder(self) -> str | None:
        raw = self.client.get(self.key)
        return raw.decode() if raw is not None else None

    @property
    def _ttl_ms(self) -> int:
        return max(int(self.ttl_s * 1000), 1)
