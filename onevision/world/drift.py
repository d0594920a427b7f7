"""Worlds that drift: scheduled changes after the training cutoff, for the live simulator only.

The stationary world never changes after its history, so nothing a model learns from live
traffic can beat the model trained on that history. A drift scenario is a schedule, kept beside
the world (`<world>/drifts/<scenario>.json`) and never in its tables, so the catalog, its
fingerprint and everything trained on it stay what they were; the simulator applies it to its
shoppers and, where the shop itself changes, the catalog topic carries the change:

- `trend`: a colour becomes the fashion for a share of the shoppers: their utility for items of
  that colour rises by `boost` (ramped in over `ramp_s`), so they buy its variants when shown;
- `price-shock`: half the items of a category (drawn) get `factor` times dearer, published as
  catalog price changes; shoppers react to the new prices through their price sensitivity, and
  turn to the near-duplicates that did not move;
- `launches`: `adds` new items (new families of the world's generator, `world.next_version`)
  are published to the catalog and photographed by shoppers from then on (a share `photo_share`
  of the searches), with no history.

Every scenario starts `start_s` seconds into the simulated traffic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from onevision.world.config import WorldConfig
from onevision.world.products import COLOURS

SCENARIOS = ("trend", "price-shock", "launches")
_DRIFT = 7  # the random stream of drift schedules (build.py's purposes are 0-5, launches 6)


class Drift(BaseModel):
    """One scenario's schedule (the fields of other scenarios are ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: Literal["trend", "price-shock", "launches"]
    seed: int = 1
    start_s: float = Field(60.0, ge=0, description="seconds of traffic before the change starts")
    ramp_s: float = Field(60.0, ge=0, description="seconds until it is at full strength")
    # trend
    colour: str = ""
    share: float = Field(0.6, ge=0, le=1, description="share of shoppers who follow the trend")
    boost: float = Field(3.0, description="utility added to the colour's items at full strength")
    trend_users: list[str] = Field(default_factory=list)
    # price shock
    category: str = ""
    factor: float = Field(1.6, gt=0)
    repriced: dict[str, float] = Field(default_factory=dict, description="item id -> its price after the shock")
    # launches
    adds: int = Field(100, ge=0)
    photo_share: float = Field(0.3, ge=0, le=1, description="share of searches photographing a launched item")
    catalog: str = Field("", description="the catalog version after the change (a folder beside this file)")

    def strength(self, t: float) -> float:
        """0 before the start, then linearly to 1 over the ramp (t: seconds into the traffic)."""
        if t < self.start_s:
            return 0.0
        return 1.0 if self.ramp_s <= 0 else float(min(1.0, (t - self.start_s) / self.ramp_s))

    def changes_catalog(self) -> bool:
        return self.scenario in ("price-shock", "launches")


def drift_path(world: str | Path, scenario: str) -> Path:
    return Path(world) / "drifts" / f"{scenario}.json"


def load_drift(world: str | Path, scenario: str) -> Drift:
    path = drift_path(world, scenario)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: onevision world build --drift {scenario} writes it")
    return Drift.model_validate_json(path.read_text())


def build_drift(world: str | Path, scenario: str, seed: int = 1, write: bool = True, **options) -> Drift:
    """Write `scenario`'s schedule for a built world (and, when the shop changes, the catalog
    version after it); the world's own files are not touched. `write=False` only returns the
    schedule of a scenario that leaves the shop as it is (the world's folder stays as it was)."""
    from onevision.catalog.format import load_catalog
    from onevision.world.next_version import NextVersion, next_version

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown drift scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    if not write and Drift(scenario=scenario).changes_catalog():
        raise ValueError(f"the {scenario} drift changes the catalog: its version after the change must be written")
    world = Path(world)
    info = json.loads((world / "catalog.json").read_text())
    cfg = WorldConfig(**info["world"])
    rng = np.random.default_rng([cfg.seed, _DRIFT, seed, SCENARIOS.index(scenario)])
    drift = Drift(scenario=scenario, seed=seed, **options)
    cat = load_catalog(world, check_images=False)
    update: dict = {}
    if scenario == "trend":
        colour = drift.colour or COLOURS[int(rng.integers(len(COLOURS)))]
        users = cat.users["user_id"].to_numpy() if cat.users is not None else np.array([], str)
        chosen = rng.permutation(len(users))[: int(round(drift.share * len(users)))]
        update = {"colour": colour, "trend_users": sorted(users[chosen].tolist())}
    elif scenario == "price-shock":
        categories = sorted(cat.items["category"].unique())
        category = drift.category or categories[int(rng.integers(len(categories)))]
        items = cat.items[cat.items["category"] == category]
        moved = items.iloc[rng.permutation(len(items))[: max(1, len(items) // 2)]]
        update = {"category": category,
                  "repriced": {i: round(float(p) * drift.factor, 2) for i, p in zip(moved["item_id"], moved["price"])}}
    if drift.changes_catalog():
        folder = drift_path(world, scenario).with_suffix("")
        spec = NextVersion(adds=drift.adds if scenario == "launches" else 0, removes=0, price_changes=0,
                           photos_per_item=4, seed=seed, prices=update.get("repriced", {}))
        got = next_version(world, folder, spec)
        update["catalog"] = folder.name
        if scenario == "launches":
            update["adds"] = len(got["added"])
    drift = drift.model_copy(update=update)
    path = drift_path(world, scenario)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(drift.model_dump_json(indent=2) + "\n")
    return drift
