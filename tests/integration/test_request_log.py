"""Request contexts on Kafka (a real broker): what serving produces is what the DPO job's join
reads; the join holds a bounded window; and its resume offsets bring back every context a
session after them can need."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from streaming.request_log import ContextJoin, RequestContext, RequestLog
from tests.integration.test_stream_worker import isolated

pytestmark = [pytest.mark.integration]


def _context(i: int, ts: int, user: str = "u1") -> RequestContext:
    rng = np.random.default_rng(i)
    return RequestContext(f"r{i}", user, "image_search", ts, "onevision", "m/v0001",
                          {"short_sids": [[1, 2, 3]], "long_sid": [4, 5]},
                          rng.random((16, 320)).astype(np.float16), rng.random(256).astype(np.float32))


def test_a_context_survives_the_wire_and_is_smaller_than_before():
    c = _context(1, 123)
    raw = c.to_bytes()
    back = RequestContext.from_bytes(raw)
    assert (back.request_id, back.user_id, back.ts, back.user) == (c.request_id, c.user_id, c.ts, c.user)
    assert np.array_equal(back.grid, c.grid) and np.array_equal(back.embedding, c.embedding)
    assert len(raw) < 12_000  # the JSON and base64 form was about 14 KB


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_anything_else_is_a_value_error(raw):
    with pytest.raises(ValueError):
        RequestContext.from_bytes(raw)


def test_the_join_keeps_a_window_behind_the_sessions_and_resumes_where_it_must(services):
    s = isolated(services, "contexts")
    producer = KafkaProducer(**s.kafka.client_options(), acks="all")
    log = RequestLog(producer, s.kafka.requests_topic)
    minute = 60_000
    log.put([_context(i, i * minute, user=f"u{i % 5}") for i in range(20)])  # 20 requests a minute apart
    producer.send(s.kafka.requests_topic, key=b"u1", value=b"not a context")
    producer.flush()

    join = ContextJoin(s, window_s=10 * 60)  # ten minutes
    join.observe(19 * minute)  # sessions read up to minute 19
    assert join.catch_up() == 20 and join.counts["malformed"] == 1
    held = [c.request_id for c in join.get([f"r{i}" for i in range(20)]) if c is not None]
    assert held == [f"r{i}" for i in range(9, 20)]  # the sessions' watermark minus 10 minutes
    assert join.counts["expired"] == 9
    resume = join.resume_offsets()
    join.close()

    # the job crashes; meanwhile requests go on, one far ahead of the sessions (a job that lags)
    log.put([_context(i, i * minute, user=f"u{i % 5}") for i in (20, 21, 22, 300)])
    producer.flush()
    again = ContextJoin(s, window_s=10 * 60)
    again.seek(resume)
    again.observe(19 * minute)  # where the newest version's sessions left the window
    again.catch_up()
    assert all(c is not None for c in again.get([f"r{i}" for i in (*range(9, 23), 300)]))  # the same window, and on
    assert again.counts["read"] == 11 + 4  # from the oldest held context on, not from the start

    capped = ContextJoin(s, window_s=3600, max_contexts=4)  # memory's bound: the oldest go first
    capped.catch_up()
    assert sorted(capped.held) == ["r20", "r21", "r22", "r300"] and capped.counts["evicted"] == 20
    for j in (again, capped):
        j.close()
    producer.close()
