"""Per-client rate limits on the public endpoints, with the `limits` library (slowapi's engine):
a moving window per client address and endpoint class. Callers holding the API key are trusted
servers (the order system, load generators) and are not limited. Each ingress replica counts
its own clients (memory storage), so a cluster's limit is the per-replica one times replicas.
"""

from __future__ import annotations

import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

COSTLY = ("/v1/search", "/v1/events")  # model work and writes: the tighter limit
EXEMPT = ("/healthz", "/metrics")  # probes and scrapers


class RateLimits:
    def __init__(self, costly: str, other: str):
        self.costly, self.other = parse(costly), parse(other)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, client: str, path: str) -> int | None:
        """None when `client` may call `path` now (the call is counted), else seconds to wait."""
        if path in EXEMPT:
            return None
        item = self.costly if path in COSTLY else self.other
        key = "costly" if item is self.costly else "other"
        if self.limiter.hit(item, client, key):
            return None
        reset = self.limiter.get_window_stats(item, client, key).reset_time
        return max(1, int(reset - time.time() + 0.999))
