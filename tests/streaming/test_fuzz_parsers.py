"""Property-based fuzzing of the two parsers every stream job runs on untrusted bytes: whatever
arrives is a valid model or an EventError with a DLQ reason, never another exception (one would
stop the worker, and with it every partition it owns)."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streaming.schema import (
    CODE_MAX,
    DLQ_REASONS,
    EVENT_TYPES,
    ID_LEN,
    LIST_MAX,
    POSITION_MAX,
    PRICE_MAX,
    SID_LEN,
    TS_MAX,
    Event,
    EventError,
    SessionLog,
    parse_event,
    parse_session,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RAW = "\x00raw\x00"  # stands for a JSON token json.dumps cannot write (NaN spelled otherwise, 5,000 digits)

ids = st.text(min_size=1, max_size=40) | st.text(min_size=ID_LEN, max_size=ID_LEN)
ts = st.integers(0, TS_MAX)


@st.composite
def events(draw) -> dict:
    e = {"schema": 1, "event_id": draw(ids), "type": draw(st.sampled_from(EVENT_TYPES)), "ts": draw(ts),
         "user_id": draw(ids), "item_id": draw(ids), "scene": draw(ids)}
    optional = {"request_id": ids, "variant": ids, "experiment": ids, "position": st.integers(0, POSITION_MAX),
                "price": st.floats(0, PRICE_MAX, allow_nan=False, allow_infinity=False)}
    for name, values in optional.items():
        if draw(st.booleans()):
            e[name] = draw(st.none() | values)
    return e


sids = st.lists(st.integers(0, CODE_MAX), max_size=SID_LEN)
items = st.lists(ids, max_size=20)


@st.composite
def sessions(draw) -> dict:
    rid = draw(ids)
    return {"schema": 1, "session_id": rid, "request_id": rid, "user_id": draw(ids), "scene": draw(ids),
            "start_ts": draw(ts), "end_ts": draw(ts), "variant": draw(st.none() | ids),
            "experiment": draw(st.none() | ids), "exposed": draw(items), "purchased": draw(items),
            "clicked_not_bought": draw(items), "exposed_not_clicked": draw(items),
            "user_features": {"short_sids": draw(st.lists(sids, max_size=6)), "long_sid": draw(sids)}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)

# what a field can be turned into: the wrong type, out of every bound, or a token json.dumps refuses
weird = st.one_of(
    json_values,
    st.sampled_from([True, False, None, "", 0, -1, 1.0, 0.5, -0.0, 2**63, -(2**63) - 1, 2**64, 10**30, 1e308,
                     -1e308, 5e-324, float("nan"), float("inf"), float("-inf"), TS_MAX + 1, POSITION_MAX + 1,
                     PRICE_MAX * 2, "1767225600000", "click", "\u00e9\u4e2d\U0001f600", "\ud800", "a\x00b",
                     [], {}, [1, 2], {"nested": {"deeper": [1]}}]),
    st.text(min_size=ID_LEN + 1, max_size=ID_LEN + 50),
    st.integers(min_value=2**63),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "9" * 5000, "-" + "9" * 5000, "1e99999", "[" * 5000 + "]" * 5000,
                     "0x10", "01", "1.", ".5", "tru", "\"unterminated"]).map(lambda tok: (RAW, tok)),
)


def dumps(doc: dict) -> bytes:
    """`doc` as JSON, with (RAW, token) values written as the token itself."""
    tokens: list[str] = []

    def mark(value):
        if isinstance(value, tuple) and value[:1] == (RAW,):
            tokens.append(value[1])
            return f"{RAW}{len(tokens) - 1}"
        return value

    text = json.dumps({k: mark(v) for k, v in doc.items()}, allow_nan=True)
    for i, tok in enumerate(tokens):
        text = text.replace(json.dumps(f"{RAW}{i}"), tok)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw, valid) -> bytes:
    """A valid document with one to three fields changed, removed or added."""
    doc = draw(valid)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "drop", "add"]))
        if action == "add":
            doc[draw(st.text(max_size=12))] = draw(weird)
        elif action == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif doc:
            doc[draw(st.sampled_from(sorted(doc)))] = draw(weird)
    return dumps(doc)


def event_is_valid(e: Event) -> None:
    assert e.schema_version == 1 and type(e.schema_version) is int and e.type in EVENT_TYPES
    assert type(e.ts) is int and 0 <= e.ts <= TS_MAX
    for name in ("event_id", "user_id", "item_id", "scene"):
        assert 1 <= len(getattr(e, name)) <= ID_LEN
    for name in ("request_id", "variant", "experiment"):
        assert getattr(e, name) is None or len(getattr(e, name)) <= ID_LEN
    assert e.position is None or (type(e.position) is int and 0 <= e.position <= POSITION_MAX)
    assert e.price is None or (type(e.price) is float and math.isfinite(e.price) and 0 <= e.price <= PRICE_MAX)
    assert parse_event(e.to_json()) == e  # what a worker parsed, it can write again


def session_is_valid(s: SessionLog) -> None:
    assert type(s.schema_version) is int and s.schema_version == 1
    for name in ("session_id", "request_id", "user_id", "scene"):
        assert 1 <= len(getattr(s, name)) <= ID_LEN
    assert all(type(t) is int and 0 <= t <= TS_MAX for t in (s.start_ts, s.end_ts))
    for name in ("exposed", "purchased", "clicked_not_bought", "exposed_not_clicked"):
        assert len(getattr(s, name)) <= LIST_MAX and all(1 <= len(i) <= ID_LEN for i in getattr(s, name))
    for sid in [*s.user_features.short_sids, s.user_features.long_sid]:
        assert len(sid) <= SID_LEN and all(type(c) is int and 0 <= c <= CODE_MAX for c in sid)
    assert parse_session(s.model_dump_json(by_alias=True)) == s


def check_event(raw: bytes | str) -> None:
    try:
        e = parse_event(raw)
    except EventError as err:
        assert err.reason in DLQ_REASONS[:5], err
        assert len(err.detail) <= 400
        return
    event_is_valid(e)


def check_session(raw: bytes | str) -> None:
    try:
        s = parse_session(raw)
    except EventError as err:
        assert err.reason == "malformed session log", err
        assert len(err.detail) <= 400
        return
    session_is_valid(s)


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 100_000)  # once a RecursionError out of json.loads
@example(b'{"a":' * 50_000)
@example(b"\xff\xfe" + json.dumps({"schema": 1}).encode("utf-16-le"))
def test_any_bytes(raw):
    check_event(raw)
    check_session(raw)


@FUZZ
@given(st.text(max_size=200))
def test_any_text(raw):
    check_event(raw)
    check_session(raw)


@FUZZ
@given(json_values)
def test_any_json_value(value):
    raw = json.dumps(value)
    check_event(raw)
    check_session(raw)


@FUZZ
@given(mutated(events()))
@example(b'{"schema": true, "event_id": "e", "type": "click", "ts": 1, "user_id": "u", "item_id": "i", "scene": "s"}')
@example(b'{"schema": 1, "event_id": "e", "type": "click", "ts": true, "user_id": "u", "item_id": "i", "scene": "s"}')
@example(b'{"schema": 1, "event_id": "e", "type": "order", "ts": 1, "user_id": "u", "item_id": "i", "scene": "s", '
         b'"price": true}')
@example(b'{"schema": 1, "event_id": "e", "type": "click", "ts": 1, "user_id": "u", "item_id": "i", "scene": "s", '
         b'"position": 2.0}')
@example(b'{"schema": 1, "event_id": "e", "type": "click", "ts": 1, "user_id": "u", "item_id": "i", "scene": "s", '
         b'"variant": "\\ud800"}')
@example(b'{"schema": 1, "event_id": "e", "type": "click", "ts": 1, "user_id": "u", "item_id": "i", "scene": "s", '
         b'"request_id": [' + b"[" * 5000 + b"]" * 5001 + b"}")
def test_near_valid_events(raw):
    check_event(raw)


@FUZZ
@given(mutated(sessions()))
def test_near_valid_session_logs(raw):
    check_session(raw)


@FUZZ
@given(events())
def test_valid_events_parse_and_round_trip(doc):
    e = parse_event(json.dumps(doc))
    event_is_valid(e)
    assert parse_event(e.to_json()) == e
    assert e.model_dump(by_alias=True, exclude_none=True) == {k: v for k, v in doc.items() if v is not None}


@FUZZ
@given(sessions())
def test_valid_session_logs_parse_and_round_trip(doc):
    s = parse_session(json.dumps(doc))
    session_is_valid(s)
    assert s.model_dump(by_alias=True) == doc


def test_bool_is_no_integer():
    """`true == 1` in Python: the fuzzer's first find, once accepted as schema 1, ts 1 and price 1.0."""
    base = {"schema": 1, "event_id": "e", "type": "order", "ts": 5, "user_id": "u", "item_id": "i", "scene": "s"}
    for field, reason in (("schema", "wrong schema version"), ("ts", "invalid field"), ("price", "invalid field"),
                          ("position", "invalid field")):
        try:
            parse_event(json.dumps({**base, field: True}))
        except EventError as err:
            assert err.reason == reason
        else:
            raise AssertionError(f"{field}=true parsed")
