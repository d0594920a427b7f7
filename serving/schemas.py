"""The HTTP contract of `POST /v1/search`: what a client sends and what it gets back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from onevision.catalog.changes import MAX_IMAGE_BYTES
from onevision.generator.prompt.builder import SCENES

MAX_TOP_K = 100


class SearchParams(BaseModel):
    """Everything but the photo; a multipart upload sends these as form fields, a JSON body
    sends them beside `image_b64`."""

    user_id: str = Field(min_length=1, max_length=128)
    scene: str = "image_search"
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)

    @field_validator("scene")
    @classmethod
    def _known_scene(cls, scene: str) -> str:
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; one of {', '.join(SCENES)}")
        return scene


class JSONSearch(SearchParams):
    image_b64: str = Field(min_length=1)


class Hit(BaseModel):
    item_id: str
    position: int
    score: float  # the SID's log-probability (generator) or the ranker's score (cascade)
    sid: list[int]


class SearchResponse(BaseModel):
    request_id: str
    variant: str
    experiment: str
    model_version: str
    low_confidence: bool
    similarity: float
    short_sids: list[list[int]] | None = None  # the user's short-term SIDs it used, newest first (API key only)
    degraded: bool = False  # the online store did not answer: cold-start features were used
    feedback_token: str = Field(description="send it with a click on one of `items` (POST /v1/events)")
    items: list[Hit]


class FeedbackBody(BaseModel):
    """`POST /v1/events`. A page sends a click as `type`, `item_id` and the search answer's
    `token`; the rest is read from the token. A caller with the API key (X-API-Key) sends
    clicks and orders with the fields it knows, and may state the price it charged."""

    type: Literal["click", "order"]
    item_id: str = Field(max_length=256)
    token: str | None = Field(None, description="the feedback_token of the answer that showed item_id")
    user_id: str | None = Field(None, max_length=256)
    request_id: str | None = Field(None, max_length=256)
    position: int | None = Field(None, ge=0)
    variant: str | None = None
    experiment: str | None = None
    scene: str | None = None
    price: float | None = Field(None, ge=0, description="API key only; otherwise the catalog's")
    ts: int | None = Field(None, ge=0, description="ms since the epoch; API key only")
    event_id: str | None = Field(None, max_length=256, description="API key only: an idempotency key, so that a "
                                 "retry after a 503 counts once")


class CatalogChangeBody(BaseModel):
    """`POST /v1/catalog` (API key): one item added (`image` base64, `title`, `category`, `price` or
    null for unknown), updated (only the fields given; a new `image` is encoded again) or removed
    (`item_id` only)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["add", "update", "remove"]
    item_id: str = Field(min_length=1, max_length=200)
    title: str | None = Field(None, max_length=2000)
    category: str | None = Field(None, min_length=1, max_length=500)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_BYTES * 4 // 3 + 4,
                              description="the catalog photo, base64 (JPEG or PNG)")


def openapi_body(**content: type[BaseModel] | dict) -> dict:
    """A route's `openapi_extra` documenting a body the handler reads itself (so that clients
    and API fuzzers see the contract)."""
    return {"requestBody": {"required": True, "content": {
        ctype: {"schema": schema if isinstance(schema, dict) else schema.model_json_schema()}
        for ctype, schema in content.items()}}}


SEARCH_FORM = {"type": "object", "required": ["image", "user_id"], "properties": {
    "image": {"type": "string", "format": "binary"}, **SearchParams.model_json_schema()["properties"]}}
