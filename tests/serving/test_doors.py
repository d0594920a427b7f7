"""The service's doors without a running service: feedback tokens (forged, altered, expired,
for another item), which caller may send which event and at what price, per-client rate
limits, the online store's outage answered with cold-start features, exposures to a broker
that does not answer dropped and counted (a real kafka-python producer), and the middleware
that counts every answer and turns an unexpected error into a counted 500."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr

from infra.process import free_port
from infra.settings import KafkaSettings, Settings
from serving.access import Denied, FeedbackSigner, check_api_key, feedback_secret
from serving.exposures import Answered, ExposureLog
from serving.feedback import Unavailable, feedback_event, produce
from serving.rate_limit import RateLimits
from serving.user_reads import UserReads
from streaming.producer import EventProducer, kafka_producer

SECRET = b"0123456789abcdef0123456789abcdef"
PRICES = {"i1": 10.0, "i2": 20.0, "i3": None, "i4": 40.0}


def signer(ttl_s: int = 60) -> FeedbackSigner:
    return FeedbackSigner(SECRET, ttl_s)


def token(s: FeedbackSigner | None = None, items=("i1", "i2", "i3"), user="u1", request="r1", **kw) -> str:
    return (s or signer()).sign(request, user, "image_search", "onevision", "ab", list(items), **kw)


def click(tok: str | None, item: str = "i2", **extra) -> dict:
    body = {"type": "click", "item_id": item, **extra}
    if tok is not None:
        body["token"] = tok
    return body


def denied(body, trusted: bool = False, key_given: bool = False, s: FeedbackSigner | None = None) -> Denied:
    with pytest.raises(Denied) as exc:
        feedback_event(body, s or signer(), PRICES, trusted, key_given)
    return exc.value


def test_a_click_is_rebuilt_from_its_token_and_replays_are_one_event():
    e = feedback_event(click(token(), user_id="u1", price=0.01, request_id="forged", position=99), signer(), PRICES,
                       False, False)
    assert (e.type, e.user_id, e.item_id, e.request_id, e.position, e.variant, e.experiment, e.scene) == \
        ("click", "u1", "i2", "r1", 1, "onevision", "ab", "image_search")
    assert e.price == 20.0  # the catalog's, never the page's
    again = feedback_event(click(token()), signer(), PRICES, False, False)
    assert again.event_id == e.event_id  # the workers drop the replay as a duplicate
    assert feedback_event(click(token(), item="i3"), signer(), PRICES, False, False).price is None  # unknown price


def test_forged_clicks_are_refused():
    good = token()
    payload, mac = good.split(".")
    other_payload = token(request="r2", items=("i4",)).split(".")[0]
    assert denied(click(None)).status == 401
    assert "signature" in denied(click(f"{other_payload}.{mac}")).reason  # another request's body, this MAC
    another = FeedbackSigner(b"another secret, 32 bytes long!!", 60)
    assert "signature" in denied(click(good, item="i2"), s=another).reason
    assert "not shown" in denied(click(good, item="i4")).reason
    assert denied(click(good, user_id="someone-else")).status == 403
    assert "expired" in denied(click(token(now_ms=int(time.time() * 1000) - 61_000))).reason
    for junk in ("", "abc", "a.b.c", 7, None, "x" * 20_000, f"{payload}.{'0' * 64}"):
        assert denied(click(junk) if junk is not None else {**click(None), "token": None}).status == 403


def test_orders_need_the_api_key_and_a_trusted_caller_may_state_the_price():
    order = {"type": "order", "user_id": "u1", "item_id": "i1", "price": 1.0}
    assert denied(order).status == 401
    assert denied(order, key_given=True).status == 403
    assert denied(click(token()), key_given=True).status == 403  # a wrong key is not ignored
    e = feedback_event(order, signer(), PRICES, True, True)
    assert (e.type, e.user_id, e.price) == ("order", "u1", 1.0)
    assert feedback_event({**order, "price": None}, signer(), PRICES, True, True).price == 10.0
    retried = [feedback_event({**order, "event_id": "order-77"}, signer(), PRICES, True, True) for _ in range(2)]
    assert {e.event_id for e in retried} == {"order-77"}  # the caller's idempotency key: a retry is one order


@pytest.mark.parametrize("body, reason", [
    ([], "JSON object"), ({"type": "exposure", "item_id": "i1"}, "exposures"), ({"type": "view"}, "type"),
    ({"type": "click"}, "item_id"), ({"type": "click", "item_id": "nope"}, "unknown item")])
def test_bodies_that_are_no_event_are_a_422_whoever_sends_them(body, reason):
    for trusted in (False, True):
        with pytest.raises(ValueError, match=reason):
            feedback_event(body, signer(), PRICES, trusted, trusted)


def test_the_api_key_check_and_the_secret_file(tmp_path):
    key = SecretStr("k" * 32)
    check_api_key(key, "k" * 32, "x")
    assert pytest.raises(Denied, check_api_key, key, None, "x").value.status == 401
    assert pytest.raises(Denied, check_api_key, key, "wrong", "x").value.status == 403
    assert pytest.raises(Denied, check_api_key, None, "anything", "x").value.status == 403  # no key configured
    first = feedback_secret(None, tmp_path)
    assert len(first) >= 32 and feedback_secret(None, tmp_path) == first  # drawn once, kept
    assert (tmp_path / "secrets" / "feedback.key").stat().st_mode & 0o077 == 0
    assert feedback_secret(SecretStr("s" * 20), tmp_path) == b"s" * 20


def test_rate_limits_are_per_client_and_say_when_to_come_back():
    limits = RateLimits("3/minute", "5/minute")
    assert [limits.retry_after("a", "/v1/search") for _ in range(3)] == [None] * 3
    wait = limits.retry_after("a", "/v1/search")
    assert wait is not None and 1 <= wait <= 60
    assert limits.retry_after("b", "/v1/search") is None  # another client
    assert limits.retry_after("a", "/v1/samples") is None  # the other class has its own window
    assert all(limits.retry_after("a", "/healthz") is None for _ in range(20))


def test_an_outage_of_the_online_store_gives_cold_start_features_without_waiting():
    calls = []

    def down(user_id: str) -> dict:
        calls.append(user_id)
        raise ConnectionError("Redis is down")

    def slow(user_id: str) -> dict:
        time.sleep(2)
        return {"user_id": user_id}

    reads = UserReads(down, timeout_s=0.5, retry_s=60)
    user, degraded = asyncio.run(reads.get("u1"))
    assert degraded and user == {"user_id": "u1", "short_sids": [], "long_sid": [], "recent_sids": []}
    assert asyncio.run(reads.get("u2"))[1] and calls == ["u1"]  # the store is left alone for retry_s

    async def timed() -> tuple[bool, float]:  # timed inside the loop: asyncio.run then waits for the thread
        t0 = time.perf_counter()
        _, degraded = await UserReads(slow, timeout_s=0.2).get("u3")
        return degraded, time.perf_counter() - t0

    degraded, took = asyncio.run(timed())
    assert degraded and took < 1.0
    healthy = UserReads(lambda u: {"user_id": u, "short_sids": [[1, 2]]}, retry_s=0)
    healthy.failed_at = time.monotonic() - 1
    assert asyncio.run(healthy.get("u4")) == ({"user_id": "u4", "short_sids": [[1, 2]]}, False)


def test_exposures_to_a_broker_that_does_not_answer_are_dropped_and_counted():
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    producer = EventProducer(settings, kafka_producer(settings, max_block_ms=100, api_version=(2, 5)))
    metrics = CollectorRegistry()
    logs = ExposureLog(producer, request_log=None, metrics=metrics, max_pending=2)  # type: ignore[arg-type]
    answered = Answered("r1", "u1", "image_search", "onevision", "", "m/v1", ["i1", "i2", "i3"], [1.0, 2.0, None], {})
    t0 = time.perf_counter()
    for _ in range(10):
        logs.submit(answered)
    assert time.perf_counter() - t0 < 0.5  # never on the request path
    logs.thread.shutdown(wait=True)
    dropped = metrics.get_sample_value("onevision_exposures_dropped_total")
    assert dropped == 30 and logs.pending == 0  # every exposure counted once: buffer full or broker silent
    producer.producer.close(timeout=0)


def test_an_event_the_broker_does_not_take_is_unavailable_within_seconds_not_a_hang():
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    producer = EventProducer(settings, kafka_producer(settings, max_block_ms=300, api_version=(2, 5)))
    e = feedback_event({"type": "order", "user_id": "u1", "item_id": "i1"}, signer(), PRICES, True, True)

    async def timed() -> float:
        t0 = time.perf_counter()
        with pytest.raises(Unavailable):
            await produce(producer, e, timeout_s=1.0)
        return time.perf_counter() - t0

    assert asyncio.run(timed()) < 2.5
    producer.producer.close(timeout=0)


def doors_app(fail: bool) -> TestClient:
    """The service's middleware on a one-route app, with the attributes it reads from the ingress."""
    from serving.app import doors

    app = FastAPI()
    app.middleware("http")(doors)

    class Ingress:
        settings = Settings()
        api_key = SecretStr("k" * 32)
        rate_limits = RateLimits("2/minute", "100/minute")
        metrics = CollectorRegistry()
        responses = Counter("onevision_http_responses", "", ["route", "status"], registry=metrics)

    app.state.ingress = Ingress

    @app.post("/v1/search")
    async def search() -> dict:
        if fail:
            raise RuntimeError("a bug")
        return {"ok": True}

    return TestClient(app, raise_server_exceptions=False)


def test_every_answer_is_counted_and_an_unexpected_error_is_a_counted_500():
    client = doors_app(fail=True)
    r = client.post("/v1/search")
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    count = client.app.state.ingress.metrics.get_sample_value
    assert count("onevision_http_responses_total", {"route": "/v1/search", "status": "500"}) == 1
    ok = doors_app(fail=False)
    assert [ok.post("/v1/search").status_code for _ in range(3)] == [200, 200, 429]
    assert int(ok.post("/v1/search").headers["retry-after"]) >= 1
    assert all(ok.post("/v1/search", headers={"X-API-Key": "k" * 32}).status_code == 200 for _ in range(5))
    assert ok.get("/nowhere").status_code == 404
    count = ok.app.state.ingress.metrics.get_sample_value
    assert count("onevision_http_responses_total", {"route": "/v1/search", "status": "429"}) == 2
    assert count("onevision_http_responses_total", {"route": "unmatched", "status": "404"}) == 1
