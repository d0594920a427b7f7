"""The versioned JSON contracts on Kafka: behaviour events (`onevision.events`), dead letters
(`onevision.events.dlq`) and closed search sessions (`onevision.sessions`).

`parse_event` is on every worker's hot path: it tries pydantic's JSON validator first and only
when that fails works out which of the DLQ reasons applies.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
EVENT_TYPES = ("exposure", "click", "order")
REQUIRED = ("schema", "event_id", "type", "ts", "user_id", "item_id", "scene")


# Bounds no real event crosses: anything else is a dead letter ("invalid field"), never a number
# that overflows a counter or a string that bloats a key.
TS_MAX = 4_102_444_800_000  # 2100-01-01 in ms
ID_LEN = 256
POSITION_MAX = 10_000
PRICE_MAX = 1e9


class Event(BaseModel):
    """One behaviour event (docs/architecture.md contract, schema 1); key on Kafka = user_id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = Field(alias="schema")
    event_id: str = Field(min_length=1, max_length=ID_LEN)
    type: Literal["exposure", "click", "order"]
    ts: int = Field(ge=0, le=TS_MAX, description="event time, ms since the epoch")
    user_id: str = Field(min_length=1, max_length=ID_LEN)
    item_id: str = Field(min_length=1, max_length=ID_LEN)
    scene: str = Field(min_length=1, max_length=ID_LEN)
    request_id: str | None = Field(None, max_length=ID_LEN)
    position: int | None = Field(None, ge=0, le=POSITION_MAX)
    variant: str | None = Field(None, max_length=ID_LEN)
    experiment: str | None = Field(None, max_length=ID_LEN)
    price: float | None = Field(None, ge=0, le=PRICE_MAX, allow_inf_nan=False)

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
    except (ValueError, UnicodeDecodeError) as e:
        raise EventError("malformed json", str(e)[:200]) from None
    if not isinstance(data, dict):
        raise EventError("malformed json", f"expected an object, got {type(data).__name__}")
    missing = [f for f in REQUIRED if f not in data or data[f] is None]
    if "schema" not in missing and data.get("schema") != SCHEMA_VERSION:
        raise EventError("wrong schema version", f"schema={data.get('schema')!r}, this worker reads {SCHEMA_VERSION}")
    if "type" not in missing and data.get("type") not in EVENT_TYPES:
        raise EventError("unknown type", f"type={data.get('type')!r}")
    if missing:
        raise EventError("missing field", ", ".join(missing))
    try:
        return Event.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise EventError("invalid field", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


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
    short_sids: list[list[int]] = []
    long_sid: list[int] = []


class SessionLog(BaseModel):
    """A closed search session, the unit the near-streaming DPO job learns from."""

    schema_version: Literal[1] = Field(1, alias="schema")
    session_id: str
    request_id: str
    user_id: str
    scene: str
    start_ts: int
    end_ts: int
    variant: str | None = None
    experiment: str | None = None
    exposed: list[str] = Field(description="items shown, in position order")
    purchased: list[str]
    clicked_not_bought: list[str]
    exposed_not_clicked: list[str]
    user_features: UserSnapshot = Field(description="the user's features when the request came in")

    model_config = ConfigDict(populate_by_name=True)
