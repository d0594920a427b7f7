"""The front texture of an item: silhouette filled with the family pattern plus the brand mark.

The texture is an RGBA image whose alpha is the silhouette; camera.py places it in a scene.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from onevision.world.products import RenderSpec
from onevision.world.shapes import silhouette


def pattern_field(spec: RenderSpec, size: int) -> np.ndarray:
    """Blend weight in [0, 1] of the secondary colour at each pixel."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    u = x * np.cos(spec.pattern_angle) + y * np.sin(spec.pattern_angle)
    f = spec.pattern_freq
    p = spec.pattern
    if p == "solid":
        return np.zeros_like(x)
    if p == "stripes":
        return (np.sin(2 * np.pi * f * y) > 0.3).astype(np.float32)
    if p == "diagonal":
        return (np.sin(2 * np.pi * f * u) > 0).astype(np.float32)
    if p == "dots":
        fx, fy = (x * f * 1.5) % 1 - 0.5, (y * f * 1.5) % 1 - 0.5
        return ((fx**2 + fy**2) < 0.09).astype(np.float32)
    if p == "checks":
        return ((np.floor(x * f) + np.floor(y * f)) % 2).astype(np.float32)
    if p == "zigzag":
        tri = np.abs((x * f * 2) % 2 - 1)
        return (np.sin(2 * np.pi * (f * y + 0.4 * tri)) > 0).astype(np.float32)
    if p == "gradient":
        return np.clip(u, 0, 1)
    if p == "rings":
        r = np.hypot(x - 0.5, y - 0.5)
        return (np.sin(2 * np.pi * f * 1.5 * r) > 0).astype(np.float32)
    raise ValueError(f"unknown pattern {p!r}")


def _draw_mark(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float,
               fill: tuple[int, int, int]) -> None:
    outline = (255, 255, 255) if sum(fill) < 380 else (20, 20, 20)
    box = [cx - r, cy - r, cx + r, cy + r]
    width = max(1, int(r / 4))
    if kind == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r / 2)))
    elif kind == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill, outline=outline)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill, outline=outline)
    elif kind == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
        draw.polygon(pts, fill=fill, outline=outline)
    elif kind == "cross":
        t = r / 3
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    elif kind == "bar":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=fill, outline=outline, width=width)
    else:
        raise ValueError(f"unknown brand mark {kind!r}")


def _inside(mask: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """The silhouette pixel nearest to (x, y), so that the brand mark is always visible."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return x, y
    k = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return float(xs[k]), float(ys[k])


def front_texture(spec: RenderSpec, size: int, supersample: int = 2) -> Image.Image:
    """RGBA front view of the item, drawn supersampled then reduced (anti-aliased)."""
    big = size * supersample
    mask = silhouette(spec.archetype, spec.genes, big)
    w = pattern_field(spec, big)[..., None]
    c1 = np.asarray(spec.colour, dtype=np.float32)
    c2 = np.asarray(spec.colour2, dtype=np.float32)
    rgb = c1 * (1 - w) + c2 * w
    # soft vertical shading so the flat texture reads as an object
    shade = np.linspace(1.08, 0.82, big, dtype=np.float32)[:, None, None]
    rgb = np.clip(rgb * shade, 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(img)
    bbox = mask.getbbox() or (0, 0, big, big)
    bx0, by0, bx1, by1 = bbox
    cx, cy = _inside(np.asarray(mask) > 0, bx0 + (bx1 - bx0) * spec.mark_pos[0], by0 + (by1 - by0) * spec.mark_pos[1])
    r = max(3.0, 0.09 * big)
    _draw_mark(draw, spec.mark, cx, cy, r, spec.mark_colour)
    # a darker outline makes the silhouette visible on light backgrounds
    edge = mask.filter(ImageFilter.FIND_EDGES)
    img.paste((40, 40, 40), mask=edge)
    img.putalpha(mask)
    return img.resize((size, size), Image.Resampling.LANCZOS)
