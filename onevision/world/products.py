"""Categories, near-duplicate families and items of the synthetic world.

A family shares shape and pattern; its members differ in colour (a neighbouring shade),
brand mark or only in price, so that they are visually hard to tell apart and a shopper's
history is what separates them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from onevision.world.config import WorldConfig

# (category name, archetype drawn by shapes.py, base price)
CATEGORIES: tuple[tuple[str, str, float], ...] = (
    ("mugs", "mug", 12.0), ("water bottles", "bottle", 15.0), ("t-shirts", "shirt", 20.0),
    ("sneakers", "shoe", 70.0), ("handbags", "bag", 55.0), ("desk lamps", "lamp", 35.0),
    ("watches", "watch", 120.0), ("caps", "cap", 18.0), ("vases", "vase", 25.0),
    ("gift boxes", "box", 10.0), ("chairs", "chair", 90.0), ("headphones", "headphones", 80.0),
    ("tumblers", "mug", 16.0), ("perfume", "bottle", 60.0), ("jerseys", "shirt", 45.0),
    ("boots", "shoe", 110.0), ("totes", "bag", 30.0), ("floor lamps", "lamp", 85.0),
    ("smartwatches", "watch", 199.0), ("beanies", "cap", 14.0), ("planters", "vase", 22.0),
    ("storage boxes", "box", 19.0), ("stools", "chair", 40.0), ("earmuffs", "headphones", 25.0),
    ("teapots", "mug", 28.0), ("flasks", "bottle", 24.0), ("hoodies", "shirt", 48.0),
    ("slippers", "shoe", 22.0), ("backpacks", "bag", 65.0), ("pendant lights", "lamp", 70.0),
    ("pocket watches", "watch", 150.0), ("sun hats", "cap", 26.0), ("jugs", "vase", 18.0),
    ("jewellery boxes", "box", 35.0), ("armchairs", "chair", 240.0), ("speakers", "headphones", 95.0),
    ("cups", "mug", 9.0), ("shakers", "bottle", 12.0), ("polo shirts", "shirt", 30.0),
    ("sandals", "shoe", 35.0),
)

# colour groups: members of a group are near-duplicates of each other
COLOUR_GROUPS: tuple[tuple[tuple[str, tuple[int, int, int]], ...], ...] = (
    (("red", (200, 35, 45)), ("crimson", (165, 20, 55)), ("coral", (235, 95, 80))),
    (("orange", (240, 130, 30)), ("amber", (225, 160, 40)), ("rust", (180, 80, 35))),
    (("yellow", (245, 215, 50)), ("mustard", (210, 175, 45)), ("lemon", (250, 240, 110))),
    (("green", (50, 150, 70)), ("olive", (110, 125, 50)), ("mint", (120, 210, 160))),
    (("navy", (25, 40, 110)), ("royal blue", (45, 80, 200)), ("sky blue", (110, 170, 230))),
    (("purple", (120, 50, 160)), ("lilac", (180, 140, 210)), ("plum", (110, 40, 90))),
    (("pink", (240, 130, 170)), ("rose", (210, 90, 120)), ("magenta", (200, 40, 150))),
    (("brown", (120, 75, 40)), ("tan", (195, 150, 100)), ("chocolate", (85, 50, 30))),
    (("black", (25, 25, 28)), ("charcoal", (65, 65, 72)), ("grey", (130, 130, 135))),
    (("white", (240, 240, 236)), ("ivory", (245, 238, 215)), ("beige", (220, 205, 175))),
)
COLOURS: tuple[str, ...] = tuple(name for group in COLOUR_GROUPS for name, _ in group)
COLOUR_RGB: dict[str, tuple[int, int, int]] = {name: rgb for group in COLOUR_GROUPS for name, rgb in group}
COLOUR_GROUP_OF: dict[str, int] = {name: g for g, group in enumerate(COLOUR_GROUPS) for name, _ in group}

PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks", "zigzag", "gradient", "rings", "diagonal")
BRANDS: tuple[str, ...] = (
    "Acme", "Borealis", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Halo", "Indigo", "Juniper",
    "Kestrel", "Lumen", "Meridian", "Nimbus", "Orchid", "Pinnacle", "Quartz", "Rook", "Sable", "Tundra",
    "Umbra", "Vertex", "Willow", "Xenon", "Yarrow", "Zephyr", "Aurora", "Basalt", "Cinder", "Delta",
)
MARKS: tuple[str, ...] = ("circle", "triangle", "square", "diamond", "star", "cross", "ring", "bar")
ADJECTIVES: tuple[str, ...] = (
    "classic", "urban", "retro", "nordic", "studio", "everyday", "premium", "compact", "heritage",
    "sport", "minimal", "vintage", "deluxe", "travel", "essential", "signature",
)
VARIATIONS: tuple[str, ...] = ("colour", "brand", "price")


@dataclass(frozen=True)
class RenderSpec:
    """Everything needed to draw an item's front: shared by a family except colour and mark."""

    archetype: str
    genes: tuple[float, ...]  # shape parameters in [0, 1]
    pattern: str
    pattern_freq: float
    pattern_angle: float
    colour: tuple[int, int, int]
    colour2: tuple[int, int, int]
    mark: str
    mark_colour: tuple[int, int, int]
    mark_pos: tuple[float, float]


def singular(category: str) -> str:
    """'gift boxes' -> 'gift box', 'watches' -> 'watch', 'mugs' -> 'mug'."""
    for plural, single in (("xes", "x"), ("ches", "ch"), ("s", "")):
        if category.endswith(plural):
            return category[: -len(plural)] + single
    return category


def brand_mark(brand: str) -> tuple[str, tuple[int, int, int]]:
    """Each brand has a fixed mark shape and colour (its logo)."""
    b = BRANDS.index(brand)
    colour = COLOUR_RGB[COLOURS[(b * 7 + 3) % len(COLOURS)]]
    return MARKS[b % len(MARKS)], colour


def _family_sizes(rng: np.random.Generator, n_items: int, max_size: int) -> list[int]:
    weights = np.linspace(1.0, 0.5, max_size)
    weights /= weights.sum()
    sizes: list[int] = []
    while sum(sizes) < n_items:
        sizes.append(int(rng.choice(np.arange(1, max_size + 1), p=weights)))
    sizes[-1] -= sum(sizes) - n_items
    return [s for s in sizes if s > 0]


def build_products(cfg: WorldConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, list[RenderSpec]]:
    """Return the items table (one row per item, world attributes included) and render specs."""
    cats = CATEGORIES[: cfg.n_categories]
    cat_weights = 1.0 / np.arange(1, len(cats) + 1) ** 0.5
    cat_weights /= cat_weights.sum()
    rows: list[dict] = []
    specs: list[RenderSpec] = []
    for family_id, size in enumerate(_family_sizes(rng, cfg.n_items, cfg.max_family_size)):
        c = int(rng.choice(len(cats), p=cat_weights))
        cat_name, archetype, base_price = cats[c]
        genes = tuple(float(x) for x in rng.random(4))
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        freq = float(rng.uniform(2.5, 7.0))
        angle = float(rng.uniform(0, np.pi))
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        colour2 = COLOURS[int(rng.integers(len(COLOURS)))]
        brand = BRANDS[int(rng.integers(len(BRANDS)))]
        mark_pos = (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.3, 0.6)))
        adjective = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
        family_price = base_price * float(np.exp(rng.normal(0, 0.35)))
        for member in range(size):
            m_colour, m_brand, price = colour, brand, family_price
            variation = "original"
            if member > 0:
                variation = VARIATIONS[int(rng.integers(len(VARIATIONS)))]
                if variation == "colour":
                    group = COLOUR_GROUPS[COLOUR_GROUP_OF[colour]]
                    offset = 1 + (member - 1) % (len(group) - 1)  # never the family's own colour
                    m_colour = group[(group.index((colour, COLOUR_RGB[colour])) + offset) % len(group)][0]
                elif variation == "brand":
                    m_brand = BRANDS[(BRANDS.index(brand) + 1 + int(rng.integers(len(BRANDS) - 1))) % len(BRANDS)]
                price = family_price * float(np.exp(rng.choice([-1, 1]) * rng.uniform(0.15, 0.45)))
            mark, mark_colour = brand_mark(m_brand)
            item_idx = len(rows)
            rows.append(
                dict(
                    item_id=f"i{item_idx:06d}", family_id=f"f{family_id:06d}", category=cat_name,
                    title=f"{m_brand} {adjective} {m_colour} {pattern} {singular(cat_name)}",
                    price=round(max(price, 1.0), 2), brand=m_brand, colour=m_colour,
                    colour_group=COLOUR_GROUP_OF[m_colour], pattern=pattern, variation=variation,
                    quality=float(rng.normal(0.0, 0.5)),
                )
            )
            specs.append(
                RenderSpec(archetype, genes, pattern, freq, angle, COLOUR_RGB[m_colour], COLOUR_RGB[colour2],
                           mark, mark_colour, mark_pos)
            )
    return pd.DataFrame(rows), specs
