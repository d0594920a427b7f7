"""The HTTP contract of `POST /v1/search`: what a client sends and what it gets back."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

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
    short_sids: list[list[int]]  # the user's short-term SIDs this answer used, newest first
    items: list[Hit]
