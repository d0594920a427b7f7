"""Reading a search request: a multipart upload or a base64 JSON body, checked before any model
work, every problem a 4xx with its reason (never a 5xx, never a stopped service).

The body is read against a byte limit as it streams in, so an over-size upload is refused
without being held in memory; the photo is decoded once by `onevision.images.load_rgb`, which
refuses non-images, truncated files and decompression bombs.
"""

from __future__ import annotations

import base64
import binascii
import json

from PIL import Image
from pydantic import ValidationError
from starlette.requests import Request

from onevision.images import ImageError, ImageTooLarge, load_rgb
from serving.schemas import JSONSearch, SearchParams

MAX_UPLOAD_BYTES = 8 * 1024 * 1024


class BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def validation_reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"body of {declared} bytes is over the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadRequest(400, "empty body: send a multipart upload with an 'image' file or JSON with 'image_b64'")
    return body


async def read_search(request: Request, max_bytes: int = MAX_UPLOAD_BYTES) -> tuple[SearchParams, Image.Image]:
    """(the parameters, the decoded RGB photo) of a `POST /v1/search`, or `BadRequest`."""
    body = await read_body(request, max_bytes)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "multipart/form-data":
            params, image = await _multipart(request, body, max_bytes)
        elif ctype in ("application/json", ""):
            params, image = _json(body)
        else:
            raise BadRequest(415, f"content type {ctype!r} is not supported: "
                                  "use multipart/form-data or application/json")
    except ValidationError as exc:
        raise BadRequest(422, validation_reason(exc)) from None
    try:
        return params, load_rgb(image)
    except ImageError as exc:
        raise BadRequest(413 if isinstance(exc, ImageTooLarge) else 400, str(exc)) from None


def _json(body: bytes) -> tuple[SearchParams, bytes]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "JSON body must be an object")
    req = JSONSearch.model_validate(data)
    try:
        image = base64.b64decode(req.image_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(400, f"image_b64 is not valid base64: {exc}") from None
    return SearchParams.model_validate(req.model_dump(exclude={"image_b64"})), image


async def _multipart(request: Request, body: bytes, max_bytes: int) -> tuple[SearchParams, bytes]:
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_part_size=max_bytes)
    except Exception as exc:  # python-multipart's errors have no common base
        raise BadRequest(400, f"malformed multipart body: {exc}") from None
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise BadRequest(400, "multipart body has no 'image' file")
    image = await upload.read()
    fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}
    return SearchParams.model_validate(fields), image
