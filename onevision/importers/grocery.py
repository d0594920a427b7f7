"""Importer for the Grocery Store Dataset (Klasson et al., MIT licence) into the catalog format.

Catalog: the 81 fine-grained products, each with its one "iconic" web image, the product's
title (from its information file) and its coarse class as category. Queries: the in-store
phone photos, split as the data set splits them (train / val / test), each targeting the
product it shows. The data set has no users, prices or logs: queries belong to one
anonymous user, are all of kind "click", prices are unknown (NaN) and the events table is
empty. The two tables are written to a temporary folder and imported by `import_table`
(which checks and copies every image, so the catalog directory stands on its own).
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pandas as pd

from onevision.catalog.format import Catalog
from onevision.importers.table import ANONYMOUS_USER, TableImport, import_table


def dataset_dir(path: str | Path) -> Path:
    """Accept the data set's root or its `dataset/` folder."""
    path = Path(path)
    for candidate in (path, path / "dataset"):
        if (candidate / "classes.csv").is_file():
            return candidate
    raise FileNotFoundError(f"{path} is not the Grocery Store Dataset: no classes.csv in it or in {path / 'dataset'}")


def _title(dataset: Path, description_path: str, class_name: str) -> str:
    info = dataset / description_path.lstrip("/").replace("_Description.txt", "_Information.txt")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.lower().startswith("title:") and line.split(":", 1)[1].strip():
                return line.split(":", 1)[1].strip()
    return class_name.replace("-", " ")


def import_grocery(path: str | Path, out: str | Path, progress: bool = True) -> Catalog:
    """Write the Grocery Store Dataset as a catalog directory at `out` and return it loaded."""
    src = dataset_dir(path)
    items = []
    with open(src / "classes.csv", newline="") as fh:
        for row in csv.reader(fh):
            if not row or not row[1].strip().isdigit():
                continue  # header
            name, class_id, coarse, _, iconic, description = (c.strip() for c in row[:6])
            items.append(dict(item_id=f"g{int(class_id):03d}", image=iconic.lstrip("/"), category=coarse,
                              title=_title(src, description, name), class_name=name))
    queries = []
    for split in ("train", "val", "test"):
        listing = src / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} is missing from the Grocery Store Dataset")
        lines = [ln for ln in listing.read_text().splitlines() if ln.strip()]
        for k, line in enumerate(lines):
            photo, class_id = (c.strip() for c in line.split(",")[:2])
            queries.append(dict(query_id=f"{split}-{k:05d}", image=photo, item_id=f"g{int(class_id):03d}",
                                user_id=ANONYMOUS_USER, kind="click", split=split, source=photo))
    with tempfile.TemporaryDirectory(prefix="grocery-import-") as tmp:
        tables = Path(tmp)
        item_cols = ["item_id", "image", "category", "title", "class_name"]
        query_cols = ["query_id", "image", "item_id", "user_id", "kind", "split", "source"]
        pd.DataFrame(items, columns=item_cols).to_parquet(tables / "items.parquet", index=False)
        pd.DataFrame(queries, columns=query_cols).to_parquet(tables / "queries.parquet", index=False)
        result = import_table(TableImport(items=tables / "items.parquet", queries=tables / "queries.parquet",
                                          images_dir=src, out=Path(out), split="given", progress=progress,
                                          meta={"source": "Grocery Store Dataset (MIT licence)",
                                                "prices": "unknown (NaN)"}))
    return result.catalog
