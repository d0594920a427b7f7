"""Importer for the Grocery Store Dataset (Klasson et al., MIT licence) into the catalog format.

Catalog: the 81 fine-grained products, each with its one "iconic" web image, the product's
title (from its information file) and its coarse class as category. Queries: the in-store
phone photos, split as the data set splits them (train / val / test), each targeting the
product it shows. The data set has no users, prices or logs: queries belong to one
anonymous user, are all of kind "click", prices are 0 and the events table is empty.
Images are copied, so the catalog directory stands on its own.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from onevision.catalog.format import Catalog, empty_events, load_catalog, write_catalog

ANONYMOUS_USER = "anonymous"


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
    src, out = dataset_dir(path), Path(out)
    (out / "images" / "items").mkdir(parents=True, exist_ok=True)
    items = []
    with open(src / "classes.csv", newline="") as fh:
        for row in csv.reader(fh):
            if not row or not row[1].strip().isdigit():
                continue  # header
            name, class_id, coarse, _, iconic, description = (c.strip() for c in row[:6])
            item_id = f"g{int(class_id):03d}"
            rel = f"images/items/{item_id}.jpg"
            shutil.copyfile(src / iconic.lstrip("/"), out / rel)
            items.append(dict(item_id=item_id, image=rel, category=coarse, title=_title(src, description, name),
                              price=0.0, class_name=name))
    items_df = pd.DataFrame(items)
    queries = []
    for split in ("train", "val", "test"):
        listing = src / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} is missing from the Grocery Store Dataset")
        lines = [ln for ln in listing.read_text().splitlines() if ln.strip()]
        for k, line in enumerate(tqdm(lines, desc=f"grocery {split} photos", disable=not progress)):
            photo, class_id = (c.strip() for c in line.split(",")[:2])
            rel = f"images/queries/{split}/{k:05d}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / photo, out / rel)
            queries.append(dict(query_id=f"{split}-{k:05d}", image=rel, user_id=ANONYMOUS_USER,
                                target_item_id=f"g{int(class_id):03d}", kind="click", split=split, source=photo))
    write_catalog(out, items_df, pd.DataFrame(queries), empty_events(),
                  meta={"source": "Grocery Store Dataset (MIT licence)", "prices": "unknown (0)"})
    return load_catalog(out)
