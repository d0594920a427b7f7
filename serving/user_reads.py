"""Reading a shopper's features for a search, with a deadline and a fallback.

When the online store does not answer (Redis down or slow), the search goes on with cold-start
features and says so (`degraded` in the answer, `onevision_degraded_requests` in /metrics)
instead of failing. After a failure the store is left alone for `retry_s`, so an outage costs
each search nothing and piles up no threads; the first read after that tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("ray.serve")
TIMEOUT_S = 0.5
RETRY_S = 2.0


def cold_start(user_id: str) -> dict:
    """The features of a shopper the workers have not seen (what an outage falls back to)."""
    return {"user_id": user_id, "short_sids": [], "long_sid": [], "recent_sids": []}


class UserReads:
    def __init__(self, read: Callable[[str], dict], timeout_s: float = TIMEOUT_S, retry_s: float = RETRY_S):
        self.read, self.timeout_s, self.retry_s = read, timeout_s, retry_s
        self.failed_at: float | None = None

    async def get(self, user_id: str) -> tuple[dict, bool]:
        """(the user's features, whether they are the cold-start fallback of an outage)."""
        if self.failed_at is not None and time.monotonic() - self.failed_at < self.retry_s:
            return cold_start(user_id), True
        try:
            user = await asyncio.wait_for(asyncio.to_thread(self.read, user_id), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, the search goes on
            if self.failed_at is None:
                log.warning("online store unavailable (%s: %s); answering with cold-start features",
                            type(exc).__name__, exc)
            self.failed_at = time.monotonic()
            return cold_start(user_id), True
        if self.failed_at is not None:
            log.info("online store answers again")
            self.failed_at = None
        return user, False
