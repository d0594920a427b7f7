"""The catalog directory format (DESIGN.md, README "Bring your own data"): columns, reading,
writing, validating.

Every stage reads a catalog only through `load_catalog`, so a real data set plugs in by
writing this format. What is required is what no stage can do without; every optional column
is filled here with its documented default, so a catalog `load_catalog` accepts never fails
later on a missing column. A malformed catalog raises `CatalogError` with one line that names
the problem (the CLI prints that line, not a traceback).

Defaults (all documented in the README):
- items: `price` unknown (NaN; never read as free), no `views`, `*_30d` stats absent (the stages
  derive them from the event log, point in time);
- queries: `request_id` = `query_id`; `ts` = just after the event log's last event for a train
  query, the log's first event for a val/test one (0 without a log): a held-out query of unknown
  time reads no history, since its own outcome may be anywhere in the log; `target_item_ids` =
  [`target_item_id`]
  (the items a hit may name; the first is the one trained on);
- events (the file itself may be absent): `schema` 1, `event_id` derived from the row, no
  `request_id`/`variant`/`experiment`, `scene` "unknown", `position` -1, `price` unknown.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 2

ITEM_REQUIRED = {"item_id": "string", "image": "string", "category": "string", "title": "string"}
ITEM_OPTIONAL = {"price": "number", "views": "list", "clicks_30d": "number", "orders_30d": "number",
                 "gmv_30d": "number"}
QUERY_REQUIRED = {"query_id": "string", "image": "string", "user_id": "string", "target_item_id": "string",
                  "kind": "string", "split": "string"}
QUERY_OPTIONAL = {"ts": "number", "request_id": "string", "target_item_ids": "list"}
EVENT_REQUIRED = {"type": "string", "ts": "number", "user_id": "string", "item_id": "string"}
EVENT_OPTIONAL = {"schema": "number", "event_id": "string", "request_id": "string", "scene": "string",
                  "position": "number", "variant": "string", "experiment": "string", "price": "number"}
USER_REQUIRED = {"user_id": "string"}
QUERY_KINDS = ("click", "order")
SPLITS = ("train", "val", "test")
EVENT_TYPES = ("exposure", "click", "order")
UNKNOWN_SCENE = "unknown"


class CatalogError(ValueError):
    """A catalog that does not follow the format; the message is one line naming the problem."""


@dataclass
class Catalog:
    """A loaded catalog: its directory and tables (paths in tables are relative to `root`)."""

    root: Path
    items: pd.DataFrame
    queries: pd.DataFrame
    events: pd.DataFrame
    users: pd.DataFrame | None = None
    # item stats as known at each query's time (`onevision.catalog.item_stats.ItemStatsAsOf`), set by
    # the application layer's point-in-time join (`training.point_in_time`); None: the items table's
    # `*_30d` columns are taken as known at every time
    stats: Any = None

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def path(self, relative: str) -> Path:
        return self.root / relative

    def item_images(self) -> list[Path]:
        return [self.root / p for p in self.items["image"]]


def _kind_ok(series: pd.Series, kind: str) -> bool:
    if kind == "string":
        return pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)
    if kind == "number":
        return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    return True  # lists are checked where they are used


def _read_table(root: Path, name: str, required: dict[str, str],
                optional: dict[str, str] | None = None) -> pd.DataFrame:
    path = root / name
    if not path.is_file():
        raise CatalogError(f"catalog {root}: {name} is missing")
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"catalog {root}: {name} is not a readable parquet file ({exc})") from None
    for col, kind in {**required, **(optional or {})}.items():
        if col not in df.columns:
            if col in required:
                raise CatalogError(f"catalog {root}: {name} is missing column {col!r}")
            continue
        if df[col].isna().all() and col not in required:
            continue  # an all-null optional column (e.g. every price unknown) has no dtype to check
        if not _kind_ok(df[col], kind):
            raise CatalogError(f"catalog {root}: {name} column {col!r} must be {kind}, found {df[col].dtype}")
        if col in required and df[col].isna().any():
            row = int(df[col].isna().to_numpy().argmax())
            raise CatalogError(f"catalog {root}: {name} column {col!r} is empty in row {row}")
    return df


def _unique(root: Path, name: str, df: pd.DataFrame, col: str) -> None:
    dup = df[col][df[col].duplicated()]
    if len(dup):
        raise CatalogError(f"catalog {root}: {name} has {len(dup)} duplicate {col} values, e.g. {dup.iloc[0]!r}")


def _allowed(root: Path, name: str, df: pd.DataFrame, col: str, allowed: tuple[str, ...]) -> None:
    bad = df[col][~df[col].isin(allowed)]
    if len(bad):
        raise CatalogError(f"catalog {root}: {name} column {col!r} has value {bad.iloc[0]!r}; "
                           f"allowed: {', '.join(allowed)}")


def _images_exist(root: Path, name: str, paths: pd.Series) -> None:
    for p in paths:
        if not os.path.isfile(root / p):
            raise CatalogError(f"catalog {root}: {name} refers to image {p!r}, which does not exist")


def load_catalog(root: str | Path, check_images: bool = True) -> Catalog:
    """Read and validate a catalog directory, fill the optional columns' defaults (module doc);
    raise CatalogError naming the first problem."""
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"catalog {root}: not a directory")
    items = _read_table(root, "items.parquet", ITEM_REQUIRED, ITEM_OPTIONAL)
    queries = _read_table(root, "queries.parquet", QUERY_REQUIRED, QUERY_OPTIONAL)
    events = (_read_table(root, "events.parquet", EVENT_REQUIRED, EVENT_OPTIONAL)
              if (root / "events.parquet").exists() else empty_events())
    users = _read_table(root, "users.parquet", USER_REQUIRED) if (root / "users.parquet").exists() else None
    if len(items) == 0:
        raise CatalogError(f"catalog {root}: items.parquet has no rows")
    _unique(root, "items.parquet", items, "item_id")
    _unique(root, "queries.parquet", queries, "query_id")
    _allowed(root, "queries.parquet", queries, "kind", QUERY_KINDS)
    _allowed(root, "queries.parquet", queries, "split", SPLITS)
    _allowed(root, "events.parquet", events, "type", EVENT_TYPES)
    items, events = _items_with_defaults(items), _events_with_defaults(events)
    queries = _queries_with_defaults(queries, events)
    if (items["price"] < 0).any():
        raise CatalogError(f"catalog {root}: items.parquet has a negative price for item "
                           f"{items.loc[items['price'] < 0, 'item_id'].iloc[0]!r}")
    if (events["price"] < 0).any():
        raise CatalogError(f"catalog {root}: events.parquet has a negative price in row "
                           f"{int((events['price'] < 0).to_numpy().argmax())}")
    known = set(items["item_id"])
    unknown = queries["target_item_id"][~queries["target_item_id"].isin(known)]
    if len(unknown):
        raise CatalogError(f"catalog {root}: queries.parquet targets unknown item {unknown.iloc[0]!r}")
    for qid, targets, first in zip(queries["query_id"], queries["target_item_ids"], queries["target_item_id"]):
        if len(targets) == 0 or targets[0] != first:
            raise CatalogError(f"catalog {root}: queries.parquet query {qid!r}: target_item_ids must start with "
                               f"its target_item_id {first!r}")
        stray = [t for t in targets if t not in known]
        if stray:
            raise CatalogError(f"catalog {root}: queries.parquet query {qid!r} accepts unknown item {stray[0]!r}")
    if check_images:
        _images_exist(root, "items.parquet", items["image"])
        if "views" in items.columns:
            _images_exist(root, "items.parquet views",
                          pd.Series([p for v in items["views"] if v is not None for p in v]))
        _images_exist(root, "queries.parquet", queries["image"])
    return Catalog(root=root, items=items, queries=queries, events=events, users=users)


def _items_with_defaults(items: pd.DataFrame) -> pd.DataFrame:
    items = items.copy()
    items["price"] = (pd.to_numeric(items["price"], errors="coerce").astype("float64") if "price" in items.columns
                      else np.nan)
    return items


def _queries_with_defaults(queries: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    queries = queries.copy()
    if "request_id" not in queries.columns:
        queries["request_id"] = queries["query_id"]
    queries["request_id"] = queries["request_id"].where(queries["request_id"].notna(), queries["query_id"])
    after_log = int(events["ts"].max()) + 1 if len(events) else 0
    log_start = int(events["ts"].min()) if len(events) else 0
    ts = queries["ts"] if "ts" in queries.columns else pd.Series(np.nan, index=queries.index)
    # a held-out query of unknown time reads no history: its own outcome may be anywhere in the log
    queries["ts"] = ts.fillna(pd.Series(np.where(queries["split"] == "train", after_log, log_start),
                                        index=queries.index)).astype("int64")
    if "target_item_ids" not in queries.columns:
        queries["target_item_ids"] = None
    queries["target_item_ids"] = [list(t) if t is not None and len(t) else [first]
                                  for t, first in zip(queries["target_item_ids"], queries["target_item_id"])]
    return queries


def _events_with_defaults(events: pd.DataFrame) -> pd.DataFrame:
    events = events.copy()
    events["ts"] = events["ts"].astype("int64")
    defaults = {"schema": 1, "request_id": None, "scene": UNKNOWN_SCENE, "position": -1, "variant": None,
                "experiment": None, "price": np.nan}
    for col, value in defaults.items():
        if col not in events.columns:
            events[col] = value
        elif value is not None:
            events[col] = events[col].fillna(value)
    events["schema"] = events["schema"].astype("int64")
    events["position"] = events["position"].astype("int64")
    events["price"] = events["price"].astype("float64")
    if "event_id" not in events.columns:
        events["event_id"] = None
    missing = events["event_id"].isna()
    if missing.any():  # derived from the row (and its rank among identical rows): stable as the log grows
        keys = (events.loc[missing, "type"].astype(str) + "|" + events.loc[missing, "ts"].astype(str) + "|"
                + events.loc[missing, "user_id"].astype(str) + "|" + events.loc[missing, "item_id"].astype(str)
                + "|" + events.groupby(["type", "ts", "user_id", "item_id"]).cumcount()[missing].astype(str))
        events.loc[missing, "event_id"] = ["e" + hashlib.sha256(k.encode()).hexdigest()[:16] for k in keys]
    return events


def catalog_fingerprint(catalog: Catalog) -> str:
    """A 16-hex digest of a catalog's tables and image files (names, sizes and contents): caches and
    registry versions are keyed by it, so a catalog rebuilt under the same directory name (another
    split, other photos) never reuses what was trained or cached for the old one. Memoized per
    catalog object."""
    cached = getattr(catalog, "_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for name in ("items.parquet", "queries.parquet", "events.parquet", "users.parquet"):
        path = catalog.root / name
        h.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    paths = list(catalog.items["image"]) + [v for views in catalog.items.get("views", pd.Series([], dtype=object))
                                             if views is not None for v in views] + list(catalog.queries["image"])
    for rel in sorted(set(paths)):
        h.update(rel.encode() + _file_digest(catalog.root / rel))
    catalog._fingerprint = h.hexdigest()[:16]  # type: ignore[attr-defined]
    return catalog._fingerprint  # type: ignore[attr-defined]


def catalog_key(catalog: Catalog) -> str:
    """`<directory name>-<fingerprint>`: the folder a catalog's caches live in."""
    return f"{catalog.name}-{catalog_fingerprint(catalog)[:12]}"


def _file_digest(path: Path) -> bytes:
    st = path.stat()
    return hashlib.sha256(f"{st.st_size}:".encode() + path.read_bytes()).digest()


def empty_events() -> pd.DataFrame:
    """An events table with the contract's columns and no rows (for data sets without logs)."""
    return pd.DataFrame({
        "schema": pd.Series(dtype="int64"), "event_id": pd.Series(dtype="object"), "type": pd.Series(dtype="object"),
        "ts": pd.Series(dtype="int64"), "user_id": pd.Series(dtype="object"), "item_id": pd.Series(dtype="object"),
        "request_id": pd.Series(dtype="object"), "scene": pd.Series(dtype="object"),
        "position": pd.Series(dtype="int32"), "variant": pd.Series(dtype="object"),
        "experiment": pd.Series(dtype="object"), "price": pd.Series(dtype="float64"),
    })


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write a parquet table deterministically (no index, no pandas metadata, fixed row groups)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20)


def write_catalog(root: str | Path, items: pd.DataFrame, queries: pd.DataFrame, events: pd.DataFrame,
                  users: pd.DataFrame | None = None, meta: dict | None = None) -> Path:
    """Write the tables of a catalog (images are written by whoever makes them) and catalog.json."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_table(items, root / "items.parquet")
    write_table(queries, root / "queries.parquet")
    write_table(events, root / "events.parquet")
    if users is not None:
        write_table(users, root / "users.parquet")
    info = {"format_version": FORMAT_VERSION, "n_items": len(items), "n_queries": len(queries),
            "n_events": len(events), **(meta or {})}
    (root / "catalog.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return root
