"""Catalog changes: the records that move a served catalog from one version to the next without a
restart (an item added, updated or removed), and the diff of two catalog versions that makes them.

A record is the item's new state, not an instruction to recompute it: an added item (or one
whose photo changed) arrives with its SID, the tokenizer's reconstruction of it (`vector`, what
the workers' long-term SIDs average) and V's embedding of its photo, all made once by whoever
publishes the change with the serving tokenizer (`tokenizers.encode_items.NewItemEncoder`). Every
replica and worker then applies the same SID, so the SIDs the workers write into users' features
are the ones the replicas' tries hold. An update names only the fields it changes (an explicit
null price makes the price unknown). Records carry the tokenizer version they were encoded with;
a consumer serving another tokenizer refuses them (its SIDs would mean something else).

Applying records in order is a fold: the last record of an item wins field by field, so a batch
of records and the same records one at a time give the same catalog (`fold`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from onevision.catalog.format import Catalog

log = logging.getLogger(__name__)
SCHEMA = 1
KINDS = ("add", "update", "remove")
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # a catalog photo inside one record (Kafka's default limit is 1 MiB per record
                                   # on most brokers: raise the topic's max.message.bytes for larger photos)
ITEM_FIELDS = ("title", "category", "price")  # what an update may change besides the photo
ENCODED_FIELDS = ("sid", "vector", "embedding", "tokenizer")  # what a new photo brings


class CatalogChangeError(ValueError):
    """A change record that cannot be applied; the message says why in one line."""


class ItemChange(BaseModel):
    """One item's change. `add`: the whole item (title, category, price or null, photo, and what the
    photo encodes to); `update`: the fields given (a new photo with its encoding); `remove`: the id."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_version: int = Field(SCHEMA, alias="schema")
    change_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=200)
    ts: int = Field(0, ge=0, description="ms: when the change was published")
    kind: Literal["add", "update", "remove"]
    item_id: str = Field(min_length=1, max_length=200)
    title: str | None = Field(None, max_length=2000)
    category: str | None = Field(None, min_length=1, max_length=500)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    image: str | None = Field(None, description="the catalog photo, base64 (JPEG or PNG bytes)")
    sid: list[int] | None = None
    vector: list[float] | None = None
    embedding: list[float] | None = None
    tokenizer: str | None = Field(None, description="the tokenizer version (`model/vNNNN`) that gave the SID")

    @model_validator(mode="after")
    def _whole(self) -> "ItemChange":
        given = self.model_fields_set
        if self.schema_version != SCHEMA:
            raise ValueError(f"change schema {self.schema_version} is not {SCHEMA}")
        if self.kind == "add":
            missing = [f for f in ("title", "category", "image", "sid", "embedding", "tokenizer")
                       if getattr(self, f) is None]
            if missing:
                raise ValueError(f"an added item needs {', '.join(missing)}")
        if self.kind == "update" and not given & {*ITEM_FIELDS, "image"}:
            raise ValueError("an update changes nothing: give title, category, price or image")
        if "image" in given and self.kind != "remove":
            if any(getattr(self, f) is None for f in ("image", *ENCODED_FIELDS)):
                raise ValueError("a new photo needs its sid, vector, embedding and tokenizer (encode it with the "
                                 "serving tokenizer: onevision catalog publish does)")
            if len(self.image) > MAX_IMAGE_BYTES * 4 // 3 + 4:  # type: ignore[arg-type]  # checked above
                raise ValueError(f"the photo is over {MAX_IMAGE_BYTES} bytes")
            try:
                base64.b64decode(self.image, validate=True)  # type: ignore[arg-type]
            except binascii.Error:
                raise ValueError("the photo is not valid base64") from None
        elif given & set(ENCODED_FIELDS):
            raise ValueError("sid, vector, embedding and tokenizer come only with a new photo (image)")
        if self.sid is not None and (not self.sid or min(self.sid) < 0 or max(self.sid) >= 2**31):
            raise ValueError("a SID is a non-empty list of codes in [0, 2^31)")
        for name in ("vector", "embedding"):
            v = getattr(self, name)
            if v is not None and (not v or not np.isfinite(v).all()):
                raise ValueError(f"{name} must be a non-empty list of finite numbers")
        return self

    def photo(self) -> bytes | None:
        return base64.b64decode(self.image) if self.image is not None else None

    def to_json(self) -> bytes:
        """The wire form: the fields this change sets (so an update keeps what it does not name)."""
        return self.model_dump_json(by_alias=True, exclude_unset=True, exclude_defaults=False).encode()

    def changes(self) -> set[str]:
        """The item fields this change sets."""
        return self.model_fields_set & {*ITEM_FIELDS, "image", *ENCODED_FIELDS}


def parse_change(raw: bytes | str | dict) -> ItemChange:
    """A record off the wire -> ItemChange, or CatalogChangeError naming the first problem."""
    try:
        change = ItemChange.model_validate(raw) if isinstance(raw, dict) else ItemChange.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise CatalogChangeError(f"{where + ': ' if where else ''}{err['msg']}") from None
    return change


def new_change(kind: str, item_id: str, ts: int, **fields) -> ItemChange:
    """A change with exactly these fields set (None values count: a null price makes it unknown), its
    id and schema set too, so they travel on the wire (`to_json` writes what is set)."""
    return ItemChange.model_validate({"schema": SCHEMA, "change_id": fields.pop("change_id", None) or uuid.uuid4().hex,
                                      "kind": kind, "item_id": item_id, "ts": ts, **fields})


@dataclass
class ItemState:
    """An item as the folded changes leave it (None: the field is not known from the changes)."""

    item_id: str
    removed: bool = False
    title: str | None = None
    category: str | None = None
    price: float | None = None
    price_set: bool = False
    image: bytes | None = None
    sid: list[int] | None = None
    vector: list[float] | None = None
    embedding: list[float] | None = None
    tokenizer: str | None = None


def fold(changes: Iterable[ItemChange], into: dict[str, ItemState] | None = None,
         keep_photos: bool = True) -> dict[str, ItemState]:
    """Item id -> its state after `changes` in order (on top of `into`, which is not modified). Only
    an add brings a removed item back; an update of a removed item changes its fields, not that.
    Without `keep_photos` the photos' bytes are not kept (a consumer that only needs what they encode to)."""
    out = dict(into or {})
    for c in changes:
        old = out.get(c.item_id)
        s = ItemState(c.item_id) if old is None or c.kind == "add" else ItemState(**vars(old))
        if c.kind == "remove":
            s.removed = True
            out[c.item_id] = s
            continue
        given = c.model_fields_set
        for f in ("title", "category", *ENCODED_FIELDS):
            if f in given or c.kind == "add":
                setattr(s, f, getattr(c, f))
        if "price" in given or c.kind == "add":
            s.price, s.price_set = c.price, True
        if ("image" in given or c.kind == "add") and keep_photos:
            s.image = c.photo()
        out[c.item_id] = s
    return out


@dataclass
class CatalogDiff:
    """What turns catalog `old` into `new`: items added (rows of new), updated (item id -> the
    fields that differ, photo included as "image") and removed (ids)."""

    added: pd.DataFrame
    updated: dict[str, set[str]]
    removed: list[str]

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "updated": len(self.updated), "removed": len(self.removed)}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _same(a, b) -> bool:
    return (_missing(a) and _missing(b)) or (not _missing(a) and not _missing(b) and a == b)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def diff_catalogs(old: Catalog, new: Catalog) -> CatalogDiff:
    """Items of `new` not in `old`, in both but different (title, category, price, or the photo's
    bytes), in `old` only."""
    o = old.items.set_index("item_id")
    n = new.items.set_index("item_id")
    added = new.items[~new.items["item_id"].isin(o.index)].reset_index(drop=True)
    removed = [i for i in old.items["item_id"] if i not in n.index]
    updated: dict[str, set[str]] = {}
    common = n.index.intersection(o.index, sort=False)
    a, b = o.loc[common], n.loc[common]  # column by column: a row lookup per item is slow at 100k items
    differs = {f: [not _same(x, y) for x, y in zip(a[f], b[f])] for f in ITEM_FIELDS}
    for k, (item, pa, pb) in enumerate(zip(common, a["image"], b["image"])):
        fields = {f for f in ITEM_FIELDS if differs[f][k]}
        if pa != pb or not _same_photo(old.path(pa), new.path(pb)):
            fields.add("image")
        if fields:
            updated[str(item)] = fields
    return CatalogDiff(added, updated, removed)


def _same_photo(a: Path, b: Path) -> bool:
    """The same bytes: one file (a version that links its photos to the last one's), or equal digests."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # a missing photo: the digest says so
        pass
    return _digest(a) == _digest(b)


def photo_text(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Expect:
    """What a consumer's encoded fields must look like: the tokenizer it serves, its SIDs' codebook
    sizes (one per level), its embeddings' and vectors' widths (None: not checked)."""

    tokenizer: str | None = None
    sizes: Sequence[int] | None = None
    dim: int | None = None
    vector_dim: int | None = None


def check_encoded(changes: Sequence[ItemChange | ItemState], expect: Expect) -> list[str]:
    """Why each change cannot be applied by a consumer that expects `expect` ("" where it can): a SID
    from another tokenizer means something else there, and a wrong width would fail its rebuild."""
    out = []
    for c in changes:
        why = ""
        if c.sid is not None:
            sizes = expect.sizes
            if expect.tokenizer is not None and c.tokenizer != expect.tokenizer:
                why = f"encoded with tokenizer {c.tokenizer}, this consumer serves {expect.tokenizer}"
            elif sizes is not None and len(c.sid) != len(sizes):
                why = f"its SID has {len(c.sid)} codes, this consumer's have {len(sizes)}"
            elif sizes is not None and any(code >= n for code, n in zip(c.sid, sizes)):
                why = f"its SID {c.sid} has codes outside the codebook sizes {list(sizes)}"
            elif expect.dim is not None and len(c.embedding or ()) != expect.dim:
                why = f"its embedding has {len(c.embedding or ())} dimensions, this consumer's {expect.dim}"
            elif expect.vector_dim is not None and len(c.vector or ()) != expect.vector_dim:
                why = f"its vector has {len(c.vector or ())} dimensions, this consumer's {expect.vector_dim}"
        out.append(why)
    return out


def acceptable(states: Mapping[str, ItemState], expect: Expect) -> tuple[dict[str, ItemState], dict[str, str]]:
    """(the states a consumer that expects `expect` can apply, item id -> why each other one is
    refused): `check_encoded` over folded states."""
    reasons = check_encoded(list(states.values()), expect)
    refused = {item: why for item, why in zip(states, reasons) if why}
    for item, why in refused.items():
        log.error("catalog change of %s refused: %s", item, why)
    return {i: s for i, s in states.items() if i not in refused}, refused
