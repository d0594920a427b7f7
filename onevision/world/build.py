"""Build a synthetic world into a catalog directory: products, shoppers, history, queries, images.

Each image's randomness comes from its own seed (world seed, purpose, index), so rendering in
any number of processes, in any order, gives the same bytes. The world is written to a
`.partial` directory and renamed into place at the end, so an interrupted build never looks
finished and simply runs again.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from onevision.catalog.format import write_catalog
from onevision.world.camera import STYLES, jpeg_bytes, photograph
from onevision.world.config import WorldConfig
from onevision.world.history import WorldSimulator, business_stats
from onevision.world.products import RenderSpec, build_products
from onevision.world.render import front_texture
from onevision.world.users import sample_shoppers

# purposes of independent random streams derived from the world seed
_PRODUCTS, _SHOPPERS, _HISTORY, _QUERIES, _VIEWS, _PHOTOS = range(6)
DEFAULT_ROOT = Path("data/worlds")


def world_dir(preset_name: str, seed: int) -> Path:
    """Where `onevision world build` and the quickstart put a preset's world by default."""
    return DEFAULT_ROOT / (preset_name if seed == 0 else f"{preset_name}-seed{seed}")


@dataclass(frozen=True)
class _RenderTask:
    index: int
    item_id: str
    spec: RenderSpec
    queries: tuple[tuple[int, str], ...]  # (query index, relative path) of photos of this item


@dataclass
class WorldSummary:
    path: Path
    n_items: int
    n_families: int
    n_users: int
    n_events: int
    n_queries: int
    n_images: int
    seconds: float
    skipped: bool = False

    @property
    def items_per_second(self) -> float:
        return self.n_items / self.seconds if self.seconds else float("inf")


def _render(args: tuple[WorldConfig, Path, _RenderTask]) -> int:
    cfg, root, task = args
    size = cfg.image_size
    texture = front_texture(task.spec, size)
    folder = root / "images" / "items" / task.item_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, _VIEWS, task.index])
    shots = [("catalog", STYLES["catalog"])] + [(f"view{k}", STYLES["view"]) for k in range(1, cfg.n_views + 1)]
    for name, style in shots:
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(rng, photograph(rng, texture, size, style), style))
    for q, rel in task.queries:
        q_rng = np.random.default_rng([cfg.seed, _PHOTOS, q])
        shopper = STYLES["shopper"]
        (root / rel).write_bytes(jpeg_bytes(q_rng, photograph(q_rng, texture, size, shopper), shopper))
    return len(shots) + len(task.queries)


def _manifest(out: Path) -> dict:
    info = out / "catalog.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def is_built(out: Path, cfg: WorldConfig) -> bool:
    """True when `out` holds a finished world built from exactly this config."""
    return _manifest(out).get("world") == cfg.identity()


def build_world(cfg: WorldConfig, out: str | Path, force: bool = False, progress: bool = True) -> WorldSummary:
    """Generate the world of `cfg` into catalog directory `out`."""
    out = Path(out)
    t0 = time.perf_counter()
    if is_built(out, cfg) and not force:
        m = _manifest(out)
        return WorldSummary(out, m["n_items"], m["n_families"], m["n_users"], m["n_events"], m["n_queries"],
                            m["n_images"], 0.0, skipped=True)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and holds something else; pass --force to replace it")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images" / "queries").mkdir(parents=True)

    items, specs = build_products(cfg, np.random.default_rng([cfg.seed, _PRODUCTS]))
    shoppers = sample_shoppers(np.random.default_rng([cfg.seed, _SHOPPERS]), cfg.n_users, cfg.n_categories)
    sim = WorldSimulator(cfg, items, shoppers)
    sim.history(np.random.default_rng([cfg.seed, _HISTORY]), progress)
    queries = sim.queries(np.random.default_rng([cfg.seed, _QUERIES]), progress)
    events = sim.events()

    items = items.merge(business_stats(events, items["item_id"], cfg.epoch_ms), on="item_id")
    items.insert(1, "image", [f"images/items/{i}/catalog.jpg" for i in items["item_id"]])
    items.insert(2, "views", [[f"images/items/{i}/view{k}.jpg" for k in range(1, cfg.n_views + 1)]
                              for i in items["item_id"]])

    index_of = {item_id: k for k, item_id in enumerate(items["item_id"])}
    photos: dict[int, list[tuple[int, str]]] = {}
    for q, (photo_item, rel) in enumerate(zip(queries["photo_item_id"], queries["image"])):
        photos.setdefault(index_of[photo_item], []).append((q, rel))
    tasks = [(cfg, tmp, _RenderTask(k, items["item_id"].iloc[k], specs[k], tuple(photos.get(k, ()))))
             for k in range(len(items))]
    workers = cfg.workers or os.cpu_count() or 1
    n_images = 0
    bar = tqdm(total=len(tasks), desc=f"rendering {cfg.name} world", unit="item", disable=not progress)
    if workers == 1:
        for t in tasks:
            n_images += _render(t)
            bar.update()
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for n in pool.imap_unordered(_render, tasks, chunksize=16):
                n_images += n
                bar.update()
    bar.close()

    write_catalog(tmp, items, queries, events, shoppers.to_frame(),
                  meta={"source": "onevision world", "world": cfg.identity(), "n_users": shoppers.n,
                        "n_families": int(items["family_id"].nunique()), "n_images": n_images})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return WorldSummary(out, len(items), items["family_id"].nunique(), shoppers.n, len(events), len(queries),
                        n_images, time.perf_counter() - t0)
