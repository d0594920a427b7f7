"""The versioned JSON contracts on Kafka: behaviour events (`onevision.events`), dead letters
(`onevision.events.dlq`) and closed search sessions (`onevision.sessions`).

`parse_event` is on every worker's hot path: it tries pydantic's JSON validator first and only
when that fails works out which of the DLQ reasons applies. `parse_session` is the DPO job's
reader of session logs. Both are fuzzed (tests/streaming/test_fuzz_parsers.py): whatever bytes
arrive, they return a valid model or raise EventError, so one poison record never stops a job.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
EVENT_TYPES = ("exposure", "click", "order")
REQUIRED = ("schema", "event_id", "type", "ts", "user_id", "item_id", "scene")
DLQ_REASONS = ("malformed json", "wrong schema version", "unknown type", "missing field", "invalid field",
               "malformed session log")


# Bounds no real event crosses: anything else is a dead letter ("invalid field"), never a number
# that overflows a counter or a string that bloats a key.
TS_MAX = 4_102_444_800_000  # 2100-01-01 in ms
ID_LEN = 256
POSITION_MAX = 10_000
PRICE_MAX = 1e9
LIST_MAX = POSITION_MAX  # items in one session's lists (a result page has at most this many)
SID_LEN = 64  # codes in one semantic ID
CODE_MAX = 2**31 - 1


# Integers and prices are strict: `true` is no timestamp, and "5" or 5.0 no position
Id = Annotated[str, Field(min_length=1, max_length=ID_LEN)]
OptionalId = Annotated[str | None, Field(max_length=ID_LEN)]
Ts = Annotated[int, Field(strict=True, ge=0, le=TS_MAX, description="ms since the epoch")]
Sid = Annotated[list[Annotated[int, Field(strict=True, ge=0, le=CODE_MAX)]], Field(max_length=SID_LEN)]
Items = Annotated[list[Id], Field(max_length=LIST_MAX)]


class Event(BaseModel):
    """One behaviour event (docs/architecture.md contract, schema 1); key on Kafka = user_id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = Field(alias="schema", strict=True, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    event_id: Id
    type: Literal["exposure", "click", "order"]
    ts: Ts = Field(description="event time, ms since the epoch")
    user_id: Id
    item_id: Id
    scene: Id
    request_id: OptionalId = None
    position: int | None = Field(None, strict=True, ge=0, le=POSITION_MAX)
    variant: OptionalId = None
    experiment: OptionalId = None
    price: float | None = Field(None, strict=True, ge=0, le=PRICE_MAX, allow_inf_nan=False)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class EventError(ValueError):
    """An event that cannot be applied; `reason` is one of the DLQ reasons."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def parse_event(raw: bytes | str) -> Event:
    """Validate one event; raises EventError('malformed json' | 'wrong schema version' |
    'unknown type' | 'missing field' | 'invalid field')."""
    try:
        return Event.model_validate_json(raw)
    except ValidationError:
        pass
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: thousands of nested brackets
        raise EventError("malformed json", str(e)[:200]) from None
    if not isinstance(data, dict):
        raise EventError("malformed json", f"expected an object, got {type(data).__name__}")
    missing = [f for f in REQUIRED if f not in data or data[f] is None]
    schema = data.get("schema")
    if "schema" not in missing and (type(schema) is not int or schema != SCHEMA_VERSION):  # true == 1 in Python
        raise EventError("wrong schema version", f"schema={_show(schema)}, this worker reads {SCHEMA_VERSION}")
    if "type" not in missing and data.get("type") not in EVENT_TYPES:
        raise EventError("unknown type", f"type={_show(data.get('type'))}")
    if missing:
        raise EventError("missing field", ", ".join(missing))
    try:
        return Event.model_validate(data)
    except ValidationError as e:
        raise EventError("invalid field", _first_error(e)) from None


def _show(value: object) -> str:
    """A short repr for a detail: the DLQ record carries the raw bytes anyway, and repr of deeply
    nested lists can itself overflow the stack."""
    return f"<{type(value).__name__}>" if isinstance(value, dict | list) else repr(value)[:100]


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False, include_input=False)[0]
    loc = ".".join(map(str, err["loc"]))
    return (f"{loc}: {err['msg']}" if loc else err["msg"])[:300]


class DeadLetter(BaseModel):
    """What lands on the DLQ: the reason, where the event came from, and its bytes as text."""

    reason: str
    detail: str = ""
    topic: str
    partition: int
    offset: int
    key: str | None = None
    raw: str


class UserSnapshot(BaseModel):
    short_sids: Annotated[list[Sid], Field(max_length=LIST_MAX)] = []
    long_sid: Sid = []


class SessionLog(BaseModel):
    """A closed search session, the unit the near-streaming DPO job learns from. Bounded like
    Event: a log is trusted no more than the events it was made of."""

    schema_version: int = Field(SCHEMA_VERSION, alias="schema", strict=True, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    session_id: Id
    request_id: Id
    user_id: Id
    scene: Id
    start_ts: Ts
    end_ts: Ts
    variant: OptionalId = None
    experiment: OptionalId = None
    exposed: Items = Field(description="items shown, in position order")
    purchased: Items
    clicked_not_bought: Items
    exposed_not_clicked: Items
    user_features: UserSnapshot = Field(description="the user's features when the request came in")

    model_config = ConfigDict(populate_by_name=True)


def parse_session(raw: bytes | str) -> SessionLog:
    """Validate one session log; anything but a valid one raises EventError('malformed session log')."""
    try:
        return SessionLog.model_validate_json(raw)
    except ValidationError as e:
        raise EventError("malformed session log", _first_error(e)) from None
    except (ValueError, RecursionError) as e:  # e.g. a str holding lone surrogates
        raise EventError("malformed session log", str(e)[:200]) from None
