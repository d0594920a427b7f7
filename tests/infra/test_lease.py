"""The Redis lease: one holder at a time, the second told who holds it, a lapsed lease taken over,
and a former holder that can neither renew nor release the new holder's."""

from __future__ import annotations

import time

import pytest

from infra.lease import Lease, LeaseHeld
from infra.settings import redis_client


def test_one_holder_at_a_time(services):
    r = redis_client(services.redis)
    key = f"test-lease-{time.time_ns()}"
    first, second = Lease(r, key, ttl_s=1.0, token="first"), Lease(r, key, ttl_s=5, token="second")
    first.acquire()
    with pytest.raises(LeaseHeld, match=f"^{key} is held by first "):
        second.acquire(wait_s=0.1)
    assert first.renew()
    second.acquire(wait_s=3)  # the first stopped renewing: its lease lapsed
    assert not first.renew()  # and is not taken back
    first.release()
    assert second.holder() == "second" and second.renew()
    second.release()
    assert second.holder() is None
    assert second.renew() and second.holder() == "second"  # lapsed and unclaimed: taken again
    second.release()
