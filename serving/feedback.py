"""`POST /v1/events`: a click or order turned into the event the workers apply, or refused.

A page's click is rebuilt from its search answer's feedback token (`serving.access`): user,
request id, scene, variant, experiment and position are the token's, the price the catalog's,
and the event id is derived from (request, item), so replaying the same click is a duplicate
the workers drop. A caller with the API key (the order system, a server) sends orders and
clicks as it knows them, and may state the price it charged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping

from kafka.errors import KafkaError

from serving.access import Denied, FeedbackSigner
from streaming.producer import EventProducer, event
from streaming.schema import Event

TRUSTED_FIELDS = ("type", "user_id", "item_id", "request_id", "position", "variant", "experiment", "scene", "price",
                  "ts", "event_id")  # event_id: the caller's idempotency key (a retried order is one order)
WRITABLE = ("click", "order")


def feedback_event(body: object, signer: FeedbackSigner, prices: Mapping[str, float | None], trusted: bool,
                   key_given: bool) -> Event:
    """The event to produce for `body`; `ValueError` (or pydantic's `ValidationError`) for a body
    that is not a valid event (422), `Denied` for a caller who may not send it (401/403).
    `trusted`: the request carried the valid API key; `key_given`: it carried some key."""
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, not {type(body).__name__}")
    kind = body.get("type")
    if kind == "exposure":
        raise ValueError("exposures are logged by the service itself")
    if kind not in WRITABLE:
        raise ValueError(f"type must be one of {', '.join(WRITABLE)}, not {kind!r}")
    item = body.get("item_id")
    if not isinstance(item, str) or item not in prices:
        raise ValueError(f"item_id: unknown item {item!r}" if item else "item_id: missing")
    if trusted:
        fields = {k: body[k] for k in TRUSTED_FIELDS if body.get(k) not in (None, "")}
        fields.setdefault("price", prices[item])
        return event(**fields)
    if key_given:
        raise Denied(403, "the API key is not valid")
    if kind == "order":
        raise Denied(401, "orders come from the order system: they need the API key (header X-API-Key)")
    if "token" not in body:
        raise Denied(401, "a click needs the feedback_token of the search answer that showed the item")
    shown = signer.verify(body["token"])
    if item not in shown.items:
        raise Denied(403, f"item {item!r} was not shown by request {shown.request_id}")
    if body.get("user_id") not in (None, "", shown.user_id):
        raise Denied(403, "the click's user is not the user the search answered")
    event_id = hashlib.sha256(f"{shown.request_id}|{item}|click".encode()).hexdigest()[:32]
    return event("click", shown.user_id, item, scene=shown.scene, request_id=shown.request_id,
                 position=shown.items.index(item), price=prices[item], event_id=event_id,
                 variant=shown.variant, experiment=shown.experiment or None)


class Unavailable(Exception):
    """The broker did not take the event in time: answer 503 with Retry-After, never hang."""


async def produce(producer: EventProducer, e: Event, timeout_s: float) -> None:
    """Send `e` and wait until the broker has it; `Unavailable` when it does not within
    `timeout_s` (plus the producer's `max_block_ms` when its buffer is full or it has no metadata)."""
    try:
        sent = await asyncio.to_thread(producer.send, e)
        await asyncio.to_thread(sent.get, timeout_s)
    except KafkaError as exc:
        raise Unavailable(type(exc).__name__) from None
