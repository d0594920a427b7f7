"""Silhouettes of product archetypes, drawn as masks.

Each archetype is a small drawing function of four shape genes in [0, 1]; a family keeps its
genes, so all its members share the silhouette.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image, ImageDraw

Genes = tuple[float, ...]
Draw = Callable[[ImageDraw.ImageDraw, float, Genes], None]


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _mug(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    w = _lerp(0.38, 0.55, g[0]) * s
    h = _lerp(0.45, 0.65, g[1]) * s
    x0, y0 = 0.45 * s - w / 2, 0.5 * s - h / 2
    d.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=_lerp(0.02, 0.12, g[2]) * s, fill=255)
    hw = _lerp(0.1, 0.18, g[3]) * s
    d.ellipse([x0 + w - hw * 0.5, y0 + h * 0.2, x0 + w + hw, y0 + h * 0.75], outline=255, width=max(2, int(0.05 * s)))


def _bottle(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    w = _lerp(0.25, 0.42, g[0]) * s
    h = _lerp(0.45, 0.6, g[1]) * s
    x0, y0 = 0.5 * s - w / 2, 0.88 * s - h
    d.rounded_rectangle([x0, y0, x0 + w, 0.88 * s], radius=_lerp(0.03, 0.1, g[2]) * s, fill=255)
    nw = w * _lerp(0.3, 0.6, g[3])
    shoulder = y0 + 0.05 * s
    d.polygon([(x0, shoulder), (0.5 * s - nw / 2, 0.2 * s), (0.5 * s + nw / 2, 0.2 * s), (x0 + w, shoulder)], fill=255)
    d.rectangle([0.5 * s - nw / 2, 0.1 * s, 0.5 * s + nw / 2, 0.22 * s], fill=255)


def _shirt(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    bw = _lerp(0.36, 0.5, g[0]) * s
    sl = _lerp(0.12, 0.22, g[1]) * s
    top, bottom = 0.18 * s, _lerp(0.78, 0.9, g[2]) * s
    cx = 0.5 * s
    neck = _lerp(0.06, 0.1, g[3]) * s
    d.polygon(
        [(cx - neck, top), (cx - bw / 2 - sl, top + 0.08 * s), (cx - bw / 2 - sl * 0.7, top + 0.3 * s),
         (cx - bw / 2, top + 0.24 * s), (cx - bw / 2, bottom), (cx + bw / 2, bottom), (cx + bw / 2, top + 0.24 * s),
         (cx + bw / 2 + sl * 0.7, top + 0.3 * s), (cx + bw / 2 + sl, top + 0.08 * s), (cx + neck, top),
         (cx, top + neck * 0.8)],
        fill=255,
    )


def _shoe(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    h = _lerp(0.2, 0.45, g[0]) * s
    toe = _lerp(0.1, 0.2, g[1]) * s
    base = 0.75 * s
    d.polygon(
        [(0.12 * s, base), (0.12 * s, base - h), (0.4 * s, base - h), (0.48 * s, base - h * _lerp(0.35, 0.6, g[2])),
         (0.88 * s - toe, base - toe * 1.2), (0.88 * s, base - toe * 0.4), (0.88 * s, base)],
        fill=255,
    )
    d.rectangle([0.1 * s, base, 0.9 * s, base + _lerp(0.03, 0.07, g[3]) * s], fill=255)


def _bag(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    top_w = _lerp(0.4, 0.6, g[0]) * s
    bot_w = _lerp(0.55, 0.75, g[1]) * s
    top, bottom = 0.38 * s, _lerp(0.78, 0.88, g[2]) * s
    cx = 0.5 * s
    d.polygon([(cx - top_w / 2, top), (cx + top_w / 2, top), (cx + bot_w / 2, bottom), (cx - bot_w / 2, bottom)],
              fill=255)
    hh = _lerp(0.12, 0.25, g[3]) * s
    d.arc([cx - top_w / 3, top - hh, cx + top_w / 3, top + hh], 180, 360, fill=255, width=max(2, int(0.04 * s)))


def _lamp(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    cx = 0.5 * s
    sw_top, sw_bot = _lerp(0.12, 0.3, g[0]) * s, _lerp(0.4, 0.65, g[1]) * s
    d.polygon([(cx - sw_top / 2, 0.12 * s), (cx + sw_top / 2, 0.12 * s), (cx + sw_bot / 2, 0.42 * s),
               (cx - sw_bot / 2, 0.42 * s)], fill=255)
    d.rectangle([cx - 0.025 * s, 0.42 * s, cx + 0.025 * s, 0.8 * s], fill=255)
    bw = _lerp(0.2, 0.4, g[2]) * s
    d.ellipse([cx - bw / 2, 0.78 * s, cx + bw / 2, _lerp(0.84, 0.9, g[3]) * s], fill=255)


def _watch(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    cx, cy = 0.5 * s, 0.5 * s
    strap = _lerp(0.16, 0.26, g[0]) * s
    d.rectangle([cx - strap / 2, 0.05 * s, cx + strap / 2, 0.95 * s], fill=255)
    r = _lerp(0.18, 0.28, g[1]) * s
    if g[2] > 0.5:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        d.rounded_rectangle([cx - r, cy - r, cx + r, cy + r], radius=_lerp(0.02, 0.1, g[3]) * s, fill=255)


def _cap(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    cx = 0.48 * s
    r = _lerp(0.25, 0.35, g[0]) * s
    base = _lerp(0.6, 0.7, g[1]) * s
    d.pieslice([cx - r, base - r * _lerp(0.8, 1.2, g[2]), cx + r, base + r * _lerp(0.8, 1.2, g[2])], 180, 360, fill=255)
    brim = _lerp(0.15, 0.32, g[3]) * s
    d.polygon([(cx - r, base), (cx + r + brim, base - 0.02 * s), (cx + r + brim, base + 0.05 * s),
               (cx - r, base + 0.06 * s)], fill=255)


def _vase(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    cx = 0.5 * s
    neck, belly, foot = _lerp(0.08, 0.16, g[0]) * s, _lerp(0.2, 0.34, g[1]) * s, _lerp(0.1, 0.2, g[2]) * s
    by = _lerp(0.45, 0.65, g[3]) * s
    pts_right = [(cx + neck, 0.12 * s), (cx + neck * 0.8, 0.25 * s), (cx + belly, by), (cx + foot, 0.88 * s)]
    pts_left = [(2 * cx - x, y) for x, y in reversed(pts_right)]
    d.polygon(pts_right + pts_left, fill=255)


def _box(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    w, h = _lerp(0.45, 0.75, g[0]) * s, _lerp(0.3, 0.55, g[1]) * s
    depth = _lerp(0.05, 0.15, g[2]) * s
    x0, y0 = 0.5 * s - w / 2, 0.55 * s - h / 2
    d.rectangle([x0, y0, x0 + w, y0 + h], fill=255)
    d.polygon([(x0, y0), (x0 + depth, y0 - depth), (x0 + w + depth, y0 - depth), (x0 + w, y0)], fill=255)
    d.polygon([(x0 + w, y0), (x0 + w + depth, y0 - depth), (x0 + w + depth, y0 + h - depth), (x0 + w, y0 + h)],
              fill=255)
    if g[3] > 0.5:
        d.rectangle([x0 - 0.02 * s, y0 - 0.04 * s, x0 + w + 0.02 * s, y0 + 0.04 * s], fill=255)


def _chair(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    seat_y = _lerp(0.5, 0.6, g[0]) * s
    w = _lerp(0.4, 0.6, g[1]) * s
    x0 = 0.5 * s - w / 2
    leg = max(2, int(_lerp(0.03, 0.06, g[2]) * s))
    d.rectangle([x0, seat_y, x0 + w, seat_y + 0.07 * s], fill=255)
    d.rectangle([x0, _lerp(0.1, 0.25, g[3]) * s, x0 + 0.07 * s, seat_y], fill=255)
    d.rectangle([x0, 0.15 * s, x0 + w * 0.6, 0.22 * s], fill=255)
    for x in (x0 + 0.01 * s, x0 + w - leg - 0.01 * s):
        d.rectangle([x, seat_y, x + leg, 0.9 * s], fill=255)


def _headphones(d: ImageDraw.ImageDraw, s: float, g: Genes) -> None:
    cx = 0.5 * s
    r = _lerp(0.25, 0.35, g[0]) * s
    d.arc([cx - r, 0.15 * s, cx + r, 0.15 * s + 2 * r], 180, 360, fill=255,
          width=max(2, int(_lerp(0.03, 0.06, g[1]) * s)))
    cup_w, cup_h = _lerp(0.12, 0.2, g[2]) * s, _lerp(0.2, 0.32, g[3]) * s
    cy = 0.15 * s + r
    for x in (cx - r, cx + r):
        d.ellipse([x - cup_w / 2, cy - cup_h / 3, x + cup_w / 2, cy + cup_h], fill=255)


ARCHETYPES: dict[str, Draw] = {
    "mug": _mug, "bottle": _bottle, "shirt": _shirt, "shoe": _shoe, "bag": _bag, "lamp": _lamp,
    "watch": _watch, "cap": _cap, "vase": _vase, "box": _box, "chair": _chair, "headphones": _headphones,
}


def silhouette(archetype: str, genes: Genes, size: int) -> Image.Image:
    """Mask ("L", 0 or 255) of an archetype's silhouette on a size x size canvas."""
    mask = Image.new("L", (size, size), 0)
    ARCHETYPES[archetype](ImageDraw.Draw(mask), float(size), genes)
    return mask
