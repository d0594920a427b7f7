"""Bring your own data in one call: an items table, an optional event log and optional query
photos (CSV or Parquet) -> a catalog directory (README "Bring your own data").

Tables (column names exact; extra item and query columns are carried into the catalog):
- items: `item_id`, `image`, `category`, `title`; optional `price` (empty = unknown, NaN) and
  `views` (more images of the item: `|`-separated in CSV, a list in Parquet).
- events: `user_id`, `item_id`, `type` (click | order | exposure; purchase and buy mean order,
  impression means exposure), `timestamp` (or `ts`); optional `price`.
- queries: `image`, `item_id` (the target; or `target_item_id`); optional `query_id`, `user_id`
  ("anonymous"), `kind` (click), `timestamp` (or `ts`), `split`, `target_item_ids` (more items a
  hit may name, `|`-separated in CSV). Without a queries table, every item with at least two
  images gives its last extra view as a query photo (split by hash).

Image paths are relative to `images_dir` (default: the folder of the table naming them) or
absolute; every image is checked and copied into the catalog, which then stands alone.
Timestamps are epoch seconds or milliseconds (a number under 1e11 is read as seconds) or ISO 8601
strings (UTC when no offset is given), normalized to int milliseconds. A row that cannot be used
is rejected, never guessed at, and counted with its reason (`ImportResult.rejected`, also in the
catalog's `import_report.json`). The same inputs give byte-identical tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from onevision.catalog.format import (
    ITEM_OPTIONAL,
    QUERY_OPTIONAL,
    SPLITS,
    Catalog,
    empty_events,
    load_catalog,
    write_catalog,
)
from onevision.images import MAX_PIXELS

SplitMode = Literal["time", "given", "hash"]
SPLIT_MODES = ("time", "given", "hash")
ANONYMOUS_USER = "anonymous"
TYPE_ALIASES = {"click": "click", "order": "order", "purchase": "order", "buy": "order", "exposure": "exposure",
                "impression": "exposure"}
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SECONDS_BELOW = 1e11  # an epoch number under this is seconds (1e11 s is the year 5138; 1e11 ms is 1973)
EXAMPLES_PER_REASON = 3

# rejection reasons (the keys of ImportResult.rejected[table])
EMPTY_FIELD = "empty required field"
MISSING_IMAGE = "missing image file"
UNREADABLE_IMAGE = "unreadable image file"
DUPLICATE_ITEM = "duplicate item id"
DUPLICATE_QUERY = "duplicate query id"
UNKNOWN_ITEM = "unknown item"
UNKNOWN_TYPE = "unknown event type"
UNKNOWN_KIND = "unknown query kind"
MISSING_TIMESTAMP = "missing timestamp"
BAD_TIMESTAMP = "bad timestamp"
BAD_SPLIT = "bad split"
NEGATIVE_PRICE = "negative price"
NON_NUMERIC_PRICE = "non-numeric price"

_ITEM_INPUT = ("item_id", "image", "category", "title", "price", "views")
_QUERY_INPUT = ("query_id", "image", "item_id", "target_item_id", "user_id", "kind", "timestamp", "ts", "split",
                "target_item_ids")
_EVENT_INPUT = ("user_id", "item_id", "type", "timestamp", "ts", "price")
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class TableImport:
    """What to import and how (README "Bring your own data")."""

    items: Path
    out: Path
    events: Path | None = None
    queries: Path | None = None
    images_dir: Path | None = None  # base of relative image paths; default: each table's folder
    split: SplitMode = "time"
    val_share: float = 0.1
    test_share: float = 0.2
    seed: int = 0
    progress: bool = True
    meta: dict[str, Any] = field(default_factory=dict)  # extra provenance for catalog.json

    def __post_init__(self) -> None:
        self.items, self.out = Path(self.items), Path(self.out)
        self.events = Path(self.events) if self.events is not None else None
        self.queries = Path(self.queries) if self.queries is not None else None
        self.images_dir = Path(self.images_dir) if self.images_dir is not None else None
        if self.split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_MODES)}, not {self.split!r}")
        for name in ("val_share", "test_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.val_share + self.test_share >= 1.0:
            raise ValueError(f"val_share + test_share must be under 1, not {self.val_share + self.test_share}")


@dataclass
class ImportResult:
    """The imported catalog and what happened to every input row."""

    catalog: Catalog
    counts: dict[str, dict[str, int]]  # table -> {"rows", "imported", "rejected"}
    rejected: dict[str, dict[str, int]]  # table -> reason -> rows
    examples: dict[str, dict[str, list[str]]]  # table -> reason -> a few rows, described
    split: str  # how the queries were split
    splits: dict[str, int]  # train/val/test -> queries
    notes: list[str]
    report: Path  # import_report.json in the catalog

    def summary_lines(self) -> list[str]:
        """The counts, then one line per rejection reason, then the notes (what the CLI prints)."""
        lines = []
        for table, c in self.counts.items():
            line = f"{table}: {c['imported']} imported of {c['rows']} rows"
            if table == "queries":
                line += f" ({', '.join(f'{s} {self.splits.get(s, 0)}' for s in SPLITS)}; split: {self.split})"
            lines.append(line)
        for table, reasons in self.rejected.items():
            lines += [f"rejected {table}: {reason}: {n}" for reason, n in reasons.items()]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"catalog written to {self.catalog.root}, report in {self.report}")
        return lines


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class _Log:
    """Rejected rows per table and reason, with a few examples each."""

    def __init__(self) -> None:
        self.rejected: dict[str, dict[str, int]] = {}
        self.examples: dict[str, dict[str, list[str]]] = {}

    def add(self, table: str, row: int, why: _Reject) -> None:
        counts = self.rejected.setdefault(table, {})
        counts[why.reason] = counts.get(why.reason, 0) + 1
        shown = self.examples.setdefault(table, {}).setdefault(why.reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(f"row {row}: {why.detail}")

    def count(self, table: str) -> int:
        return sum(self.rejected.get(table, {}).values())


@dataclass
class _Image:
    source: Path
    ext: str


@dataclass
class _Item:
    item_id: str
    image: _Image
    category: str
    title: str
    price: float
    views: list[_Image]
    extras: dict[str, Any]


@dataclass
class _Query:
    query_id: str
    image: _Image
    user_id: str
    target: str
    kind: str
    ts: int | None
    split: str | None
    targets: list[str]
    extras: dict[str, Any]


def import_table(config: TableImport) -> ImportResult:
    """Import the tables `config` names as a catalog directory at `config.out` (module doc)."""
    log, notes, images = _Log(), [], _ImageChecker()
    item_df = _read(config.items, "items")
    _require(item_df, config.items, ("item_id", "image", "category", "title"))
    items = _items(item_df, config.images_dir or config.items.parent, images, log)
    known = {it.item_id: it for it in items}
    if not items:
        raise ValueError(f"items table {config.items}: no row could be imported "
                         f"(rejected: {_describe(log.rejected.get('items', {}))})")
    notes += _ignored(item_df, "items", ITEM_OPTIONAL.keys() - _ITEM_INPUT)
    counts = {"items": {"rows": len(item_df), "imported": len(items), "rejected": log.count("items")}}

    events = empty_events()
    if config.events is not None:
        event_df = _read(config.events, "events")
        _require(event_df, config.events, ("user_id", "item_id", "type"), timestamp=True)
        events = _events(event_df, known, log)
        notes += _ignored(event_df, "events", set(event_df.columns) - {*_EVENT_INPUT})
        counts["events"] = {"rows": len(event_df), "imported": len(events), "rejected": log.count("events")}

    if config.queries is not None:
        query_df = _read(config.queries, "queries")
        _require(query_df, config.queries, ("image",))
        if "item_id" not in query_df.columns and "target_item_id" not in query_df.columns:
            raise ValueError(f"queries table {config.queries} has no item_id column (the item each photo shows)")
        if config.split == "given" and "split" not in query_df.columns:
            raise ValueError(f"--split given: queries table {config.queries} has no split column")
        if config.split != "given" and "split" in query_df.columns:
            notes.append(f"the queries table's split column was ignored (split: {config.split}; "
                         "use split 'given' to keep it)")
        notes += _ignored(query_df, "queries", QUERY_OPTIONAL.keys() - _QUERY_INPUT)
        queries = _queries(query_df, config.images_dir or config.queries.parent, known, config.split == "given",
                           images, log)
        counts["queries"] = {"rows": len(query_df), "imported": len(queries), "rejected": log.count("queries")}
        how = _assign_splits(queries, config, notes)
    else:
        if config.split == "given":
            raise ValueError("--split given needs a queries table with a split column")
        queries = _view_queries(items)
        counts["queries"] = {"rows": len(queries), "imported": len(queries), "rejected": 0}
        notes.append(f"no queries table: {len(queries)} items with two or more images gave their last extra view "
                     "as a query photo (user 'anonymous', kind click), split by hash")
        how = _assign_splits(queries, config, notes, by_hash=True)
    if not queries:
        notes.append("the catalog has no queries: training and evaluation need query photos")

    out = config.out
    item_table, query_table = _copy_images(items, queries, out, config.progress)
    report = {"inputs": {k: (p.name if p is not None else None) for k, p in
                         (("items", config.items), ("events", config.events), ("queries", config.queries))},
              "split": how, "splits": _split_counts(queries), "seed": config.seed, "val_share": config.val_share,
              "test_share": config.test_share, "counts": counts, "rejected": log.rejected, "examples": log.examples,
              "notes": notes}
    write_catalog(out, item_table, query_table, events,
                  meta={"source": "import_table", **config.meta, "import": {"split": how, "rejected": log.rejected}})
    report_path = out / "import_report.json"
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return ImportResult(catalog=load_catalog(out), counts=counts, rejected=log.rejected, examples=log.examples,
                        split=how, splits=_split_counts(queries), notes=notes, report=report_path)


# --- reading -------------------------------------------------------------------------------


def _read(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{what} table {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if ".tsv" in name else ",")
        else:
            raise ValueError(f"{what} table {path}: unsupported format (use .csv, .tsv or .parquet)")
    except (OSError, ValueError) as exc:
        if str(exc).startswith(f"{what} table"):
            raise
        raise ValueError(f"{what} table {path} could not be read: {str(exc).splitlines()[0]}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df.reset_index(drop=True)


def _describe(reasons: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in reasons.items()) or "none"


def _ignored(df: pd.DataFrame, table: str, columns: Iterable[str]) -> list[str]:
    found = [c for c in df.columns if c in set(columns)]
    return [f"{table} column(s) {', '.join(found)} ignored"] if found else []


def _require(df: pd.DataFrame, path: Path, columns: Iterable[str], timestamp: bool = False) -> None:
    missing = [c for c in columns if c not in df.columns]
    if timestamp and "timestamp" not in df.columns and "ts" not in df.columns:
        missing.append("timestamp")
    if missing:
        raise ValueError(f"table {path} has no column {', '.join(missing)} (has: {', '.join(df.columns)})")


def _text(value: Any) -> str:
    """A cell as stripped text; empty for None, NaN and blanks (ids read from Parquet as numbers too)."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, (float, np.floating))
                                                               and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _list(value: Any) -> list[str]:
    """A `|`-separated string or a list (Parquet) as a list of non-empty strings."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [t for t in (_text(v) for v in value) if t]
    return [t.strip() for t in _text(value).split("|") if t.strip()]


def _price(value: Any) -> float:
    """NaN when empty (unknown); rejects non-numeric and negative prices."""
    text = _text(value)
    if not text or text.lower() == "nan":
        return math.nan
    try:
        price = float(text)
    except ValueError:
        raise _Reject(NON_NUMERIC_PRICE, f"price {text!r}") from None
    if not math.isfinite(price):
        raise _Reject(NON_NUMERIC_PRICE, f"price {text!r}")
    if price < 0:
        raise _Reject(NEGATIVE_PRICE, f"price {text!r}")
    return price


def parse_timestamp(value: Any) -> int | None:
    """Epoch seconds or ms (a number under 1e11 is seconds), or an ISO 8601 string (UTC unless it
    says otherwise), as int ms; None when empty; ValueError when it is neither."""
    text = _text(value)
    if not text:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return round(stamp.timestamp() * 1000)
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"timestamp {text!r}")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        number = float(text)
        return round(number * 1000) if number < SECONDS_BELOW else round(number)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"timestamp {text!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return round(stamp.timestamp() * 1000)


def _timestamp(row: dict[str, Any]) -> int | None:
    value = row.get("timestamp", row.get("ts"))
    try:
        return parse_timestamp(value)
    except ValueError:
        raise _Reject(BAD_TIMESTAMP, f"timestamp {_text(value)!r}") from None


def _fields(row: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    values = [_text(row.get(n)) for n in names]
    empty = [n for n, v in zip(names, values) if not v]
    if empty:
        raise _Reject(EMPTY_FIELD, f"empty {', '.join(empty)}")
    return values


class _ImageChecker:
    """Checks an image file once (exists, decodes, not too large) and names its extension."""

    def __init__(self) -> None:
        self.seen: dict[Path, _Image | _Reject] = {}

    def __call__(self, base: Path, text: str) -> _Image:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        if path not in self.seen:
            self.seen[path] = self._check(path, text)
        found = self.seen[path]
        if isinstance(found, _Reject):
            raise found
        return found

    @staticmethod
    def _check(path: Path, text: str) -> _Image | _Reject:
        if not path.is_file():
            return _Reject(MISSING_IMAGE, f"image {text!r}")
        try:
            with Image.open(path) as img:
                fmt = img.format or ""
                if img.width * img.height > MAX_PIXELS:
                    return _Reject(UNREADABLE_IMAGE, f"image {text!r} is {img.width}x{img.height}, too large")
                img.draft("RGB", (64, 64))  # JPEG: decode at a fraction of the size, enough to find truncation
                img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            return _Reject(UNREADABLE_IMAGE, f"image {text!r} ({type(exc).__name__})")
        return _Image(path, _EXTENSIONS.get(fmt, path.suffix.lower() or ".img"))


# --- tables -----------------------------------------------------------------------------------


def _extras(df: pd.DataFrame, known: Iterable[str], reserved: Iterable[str]) -> list[str]:
    """Extra columns carried into the catalog: not read here and not a format column."""
    skip = set(known) | set(reserved)
    return [c for c in df.columns if c not in skip]


def _extra_value(value: Any) -> Any:
    if isinstance(value, str):
        return value if value.strip() else None
    return value


def _items(df: pd.DataFrame, base: Path, images: _ImageChecker, log: _Log) -> list[_Item]:
    extra_cols = _extras(df, _ITEM_INPUT, ITEM_OPTIONAL)
    items: list[_Item] = []
    seen: set[str] = set()
    for k, row in enumerate(df.to_dict("records"), start=1):
        try:
            item_id, image_text, category, title = _fields(row, ("item_id", "image", "category", "title"))
            price = _price(row.get("price"))
            image = images(base, image_text)
            if item_id in seen:
                raise _Reject(DUPLICATE_ITEM, f"item_id {item_id!r} (the first row with it is kept)")
        except _Reject as why:
            log.add("items", k, why)
            continue
        seen.add(item_id)
        views = []
        for view in _list(row.get("views")):
            try:
                views.append(images(base, view))
            except _Reject as why:  # a bad extra view is dropped; the item stays
                log.add("item views", k, _Reject(why.reason, f"item {item_id!r}: {why.detail}"))
        items.append(_Item(item_id, image, category, title, price, views,
                           {c: _extra_value(row[c]) for c in extra_cols}))
    return items


def _events(df: pd.DataFrame, known: dict[str, _Item], log: _Log) -> pd.DataFrame:
    rows: list[tuple[str, int, str, str, float]] = []
    for k, row in enumerate(df.to_dict("records"), start=1):
        try:
            user_id, item_id, type_text = _fields(row, ("user_id", "item_id", "type"))
            kind = TYPE_ALIASES.get(type_text.lower())
            if kind is None:
                raise _Reject(UNKNOWN_TYPE, f"type {type_text!r}")
            ts = _timestamp(row)
            if ts is None:
                raise _Reject(MISSING_TIMESTAMP, f"user {user_id!r} item {item_id!r}")
            if item_id not in known:
                raise _Reject(UNKNOWN_ITEM, f"item_id {item_id!r}")
            price = _price(row.get("price"))
        except _Reject as why:
            log.add("events", k, why)
            continue
        rows.append((kind, ts, user_id, item_id, price))
    events = pd.DataFrame({
        "type": pd.Series([r[0] for r in rows], dtype=object),
        "ts": pd.Series([r[1] for r in rows], dtype="int64"),
        "user_id": pd.Series([r[2] for r in rows], dtype=object),
        "item_id": pd.Series([r[3] for r in rows], dtype=object),
    })
    if "price" in df.columns:
        events["price"] = pd.Series([r[4] for r in rows], dtype="float64")
    return events.sort_values("ts", kind="stable").reset_index(drop=True)  # time order, ties as logged


def _queries(df: pd.DataFrame, base: Path, known: dict[str, _Item], given: bool, images: _ImageChecker,
             log: _Log) -> list[_Query]:
    extra_cols = _extras(df, _QUERY_INPUT, QUERY_OPTIONAL)
    target_col = "item_id" if "item_id" in df.columns else "target_item_id"
    queries: list[_Query] = []
    seen: set[str] = set()
    for k, row in enumerate(df.to_dict("records"), start=1):
        try:
            image_text, target = _fields(row, ("image", target_col))
            query_id = _text(row.get("query_id")) or f"q{k:06d}"
            user_id = _text(row.get("user_id")) or ANONYMOUS_USER
            kind_text = _text(row.get("kind")) or "click"
            kind = TYPE_ALIASES.get(kind_text.lower())
            if kind is None:
                raise _Reject(UNKNOWN_KIND, f"kind {kind_text!r}")
            ts = _timestamp(row)
            split = None
            if given:
                split_text = _text(row.get("split"))
                split = SPLIT_ALIASES.get(split_text.lower())
                if split is None:
                    raise _Reject(BAD_SPLIT, f"split {split_text!r}")
            targets = [target] + [t for t in _list(row.get("target_item_ids")) if t != target]
            stray = [t for t in targets if t not in known]
            if stray:
                raise _Reject(UNKNOWN_ITEM, f"item_id {stray[0]!r}")
            if query_id in seen:
                raise _Reject(DUPLICATE_QUERY, f"query_id {query_id!r}")
            image = images(base, image_text)
        except _Reject as why:
            log.add("queries", k, why)
            continue
        seen.add(query_id)
        queries.append(_Query(query_id, image, user_id, target, kind, ts, split, list(dict.fromkeys(targets)),
                              {c: _extra_value(row[c]) for c in extra_cols}))
    return queries


def _view_queries(items: list[_Item]) -> list[_Query]:
    """Each item with two or more images: its last extra view becomes a query photo (and leaves its views)."""
    queries = []
    for item in items:
        if item.views:
            photo = item.views.pop()
            queries.append(_Query(f"view-{item.item_id}", photo, ANONYMOUS_USER, item.item_id, "click", None, None,
                                  [item.item_id], {}))
    return queries


# --- splits -----------------------------------------------------------------------------------


def _hash_unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _assign_splits(queries: list[_Query], config: TableImport, notes: list[str], by_hash: bool = False) -> str:
    """Set each query's split; return how it was done."""
    if config.split == "given" and not by_hash:
        return "given"
    if config.split == "hash" or by_hash:
        timed: list[_Query] = []
        untimed = queries
    else:
        timed = [q for q in queries if q.ts is not None]
        untimed = [q for q in queries if q.ts is None]
    for q in untimed:
        u = _hash_unit(config.seed, q.query_id)
        q.split = "test" if u < config.test_share else "val" if u < config.test_share + config.val_share else "train"
    if timed:
        order = sorted(range(len(timed)), key=lambda i: (timed[i].ts, i))  # ties keep the table's order
        n = len(order)
        n_test = math.floor(n * config.test_share + 0.5)
        n_val = math.floor(n * config.val_share + 0.5)
        for rank, i in enumerate(order):
            timed[i].split = "test" if rank >= n - n_test else "val" if rank >= n - n_test - n_val else "train"
    if config.split == "hash" or by_hash:
        return "hash"
    if not untimed:
        return "time"
    if not timed:
        notes.append("no query has a timestamp: queries were split by hash instead of time")
        return "hash (no timestamps)"
    notes.append(f"{len(untimed)} of {len(queries)} queries have no timestamp and were split by hash, "
                 f"the other {len(timed)} by time")
    return "time, hash where no timestamp"


def _split_counts(queries: list[_Query]) -> dict[str, int]:
    return {s: sum(q.split == s for q in queries) for s in SPLITS}


# --- writing ----------------------------------------------------------------------------------


def _safe_name(key: str) -> str:
    """A file name for an id: the id itself when it is plain, else a cleaned prefix and a hash."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", key) and not key.endswith("."):
        return key
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60].strip("._") or "id"
    return f"{clean}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _copy_images(items: list[_Item], queries: list[_Query], out: Path,
                 progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copy every image into the catalog; return the items and queries tables naming the copies."""
    copies: list[tuple[Path, str]] = []
    item_rows = []
    for it in items:
        name = _safe_name(it.item_id)
        image = f"images/items/{name}{it.image.ext}"
        views = [f"images/items/views/{name}/{j}{v.ext}" for j, v in enumerate(it.views, start=1)]
        copies += [(it.image.source, image)] + [(v.source, rel) for v, rel in zip(it.views, views)]
        item_rows.append({"item_id": it.item_id, "image": image, "category": it.category, "title": it.title,
                          "price": it.price, "views": views, **it.extras})
    query_rows = []
    for q in queries:
        image = f"images/queries/{_safe_name(q.query_id)}{q.image.ext}"
        copies.append((q.image.source, image))
        query_rows.append({"query_id": q.query_id, "image": image, "user_id": q.user_id, "target_item_id": q.target,
                           "kind": q.kind, "split": q.split, "ts": q.ts, "target_item_ids": q.targets, **q.extras})
    for source, rel in tqdm(copies, desc="copying images", unit="img", disable=not progress):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / rel)

    item_table = pd.DataFrame(item_rows, columns=[*_ITEM_INPUT, *(items[0].extras if items else {})])
    item_table["price"] = item_table["price"].astype("float64")
    if not any(it.views for it in items):
        item_table = item_table.drop(columns="views")
    query_cols = ["query_id", "image", "user_id", "target_item_id", "kind", "split", "ts", "target_item_ids"]
    query_table = pd.DataFrame(query_rows, columns=[*query_cols, *(queries[0].extras if queries else {})])
    query_table = query_table.astype({c: object for c in query_cols if c not in ("ts", "target_item_ids")})
    if any(q.ts is not None for q in queries):
        query_table["ts"] = pd.array([q.ts for q in queries], dtype="Int64")  # null where unknown
    else:
        query_table = query_table.drop(columns="ts")
    if not any(len(q.targets) > 1 for q in queries):
        query_table = query_table.drop(columns="target_item_ids")
    return item_table, query_table

