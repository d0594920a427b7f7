import json

import pytest

from streaming.schema import Event, EventError, parse_event

GOOD = {"schema": 1, "event_id": "e1", "type": "click", "ts": 1_767_225_600_000, "user_id": "u1",
        "item_id": "i1", "scene": "image_search", "request_id": "r1", "position": 2, "price": 9.5,
        "variant": "a", "experiment": "x"}


def test_good_event_round_trips():
    e = parse_event(json.dumps(GOOD))
    assert e.type == "click" and e.ts == GOOD["ts"] and e.schema_version == 1
    assert parse_event(e.to_json()) == e


def test_optional_fields_may_be_absent():
    required = ("schema", "event_id", "type", "ts", "user_id", "item_id", "scene")
    e = parse_event(json.dumps({k: GOOD[k] for k in required}))
    assert e.request_id is None and e.price is None


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "malformed json"),
    (b"\xff\xfe", "malformed json"),
    (b"[1, 2]", "malformed json"),
    (json.dumps({**GOOD, "schema": 2}), "wrong schema version"),
    (json.dumps({**GOOD, "type": "view"}), "unknown type"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "user_id"}), "missing field"),
    (json.dumps({**GOOD, "ts": "yesterday"}), "invalid field"),
    (json.dumps({**GOOD, "ts": -5}), "invalid field"),
    # bounded: what no real event carries is a dead letter, never a number that breaks a worker
    (json.dumps({**GOOD, "type": "order", "price": 1e308}), "invalid field"),
    (json.dumps({**GOOD, "price": -1.0}), "invalid field"),
    (b'{"schema": 1, "event_id": "e", "type": "order", "ts": 1767225600000, "user_id": "u", "item_id": "i", '
     b'"scene": "s", "price": Infinity}', "invalid field"),
    (json.dumps({**GOOD, "position": 10**9}), "invalid field"),
    (json.dumps({**GOOD, "position": -1}), "invalid field"),
    (json.dumps({**GOOD, "ts": 10**18}), "invalid field"),  # after the year 2100
    (json.dumps({**GOOD, "user_id": "u" * 1000}), "invalid field"),
    (json.dumps({**GOOD, "request_id": "r" * 1000}), "invalid field"),
])
def test_bad_events_name_their_reason(raw, reason):
    with pytest.raises(EventError) as err:
        parse_event(raw)
    assert err.value.reason == reason


def test_missing_field_names_the_fields():
    with pytest.raises(EventError, match="ts, item_id"):
        parse_event(json.dumps({k: v for k, v in GOOD.items() if k not in ("ts", "item_id")}))


def test_event_model_is_the_contract():
    assert set(Event.model_fields) >= {"event_id", "type", "ts", "user_id", "item_id", "scene", "request_id",
                                       "position", "variant", "experiment", "price"}
