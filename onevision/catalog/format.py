"""The catalog directory format (DESIGN.md), version 1: columns, reading, writing, validating.

Every stage reads a catalog only through `load_catalog`, so a real data set plugs in by
writing this format. A malformed catalog raises `CatalogError` with one line that names the
problem (the CLI prints that line, not a traceback).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1

ITEM_REQUIRED = {"item_id": "string", "image": "string", "category": "string", "title": "string", "price": "number"}
ITEM_OPTIONAL = {"views": "list", "clicks_30d": "number", "orders_30d": "number", "gmv_30d": "number"}
QUERY_REQUIRED = {"query_id": "string", "image": "string", "user_id": "string", "target_item_id": "string",
                  "kind": "string", "split": "string"}
EVENT_REQUIRED = {"schema": "number", "event_id": "string", "type": "string", "ts": "number", "user_id": "string",
                  "item_id": "string", "request_id": "string", "scene": "string", "position": "number",
                  "variant": "string", "experiment": "string", "price": "number"}
USER_REQUIRED = {"user_id": "string"}
QUERY_KINDS = ("click", "order")
SPLITS = ("train", "val", "test")
EVENT_TYPES = ("exposure", "click", "order")


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
    """Read and validate a catalog directory; raise CatalogError naming the first problem."""
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"catalog {root}: not a directory")
    items = _read_table(root, "items.parquet", ITEM_REQUIRED, ITEM_OPTIONAL)
    queries = _read_table(root, "queries.parquet", QUERY_REQUIRED)
    events = _read_table(root, "events.parquet", EVENT_REQUIRED)
    users = _read_table(root, "users.parquet", USER_REQUIRED) if (root / "users.parquet").exists() else None
    if len(items) == 0:
        raise CatalogError(f"catalog {root}: items.parquet has no rows")
    _unique(root, "items.parquet", items, "item_id")
    _unique(root, "queries.parquet", queries, "query_id")
    _allowed(root, "queries.parquet", queries, "kind", QUERY_KINDS)
    _allowed(root, "queries.parquet", queries, "split", SPLITS)
    _allowed(root, "events.parquet", events, "type", EVENT_TYPES)
    if (items["price"] < 0).any():
        raise CatalogError(f"catalog {root}: items.parquet has a negative price for item "
                           f"{items.loc[items['price'] < 0, 'item_id'].iloc[0]!r}")
    known = set(items["item_id"])
    unknown = queries["target_item_id"][~queries["target_item_id"].isin(known)]
    if len(unknown):
        raise CatalogError(f"catalog {root}: queries.parquet targets unknown item {unknown.iloc[0]!r}")
    if check_images:
        _images_exist(root, "items.parquet", items["image"])
        if "views" in items.columns:
            _images_exist(root, "items.parquet views",
                          pd.Series([p for v in items["views"] if v is not None for p in v]))
        _images_exist(root, "queries.parquet", queries["image"])
    return Catalog(root=root, items=items, queries=queries, events=events, users=users)


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
