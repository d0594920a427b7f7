"""Photographs of an item's front texture: viewpoint, framing, occlusion, light and clutter.

A style bounds how far a photo strays from the catalog shot. The catalog view is frontal on
white; other views turn the product in 3-D (perspective of a rotated plane), rescale, crop and
occlude it, relight it and put clutter behind it; shopper photos go further and add blur,
noise and heavy JPEG compression.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class Style:
    yaw: float  # max |degrees| of rotation about the vertical axis
    pitch: float
    roll: float
    scale: tuple[float, float]  # product size as a share of the frame
    shift: float  # max |offset| of the product centre, share of the frame
    crop: tuple[float, float]  # share of the frame kept by a random crop
    occluders: int  # max occluding objects in front of the product
    clutter: int  # max background objects
    light: float  # strength of colour cast, brightness and light gradient
    blur: float  # max Gaussian blur radius in pixels
    noise: float  # max sensor noise sigma (0..255)
    jpeg: tuple[int, int]  # JPEG quality range


CATALOG = Style(0, 0, 0, (0.82, 0.82), 0.0, (1.0, 1.0), 0, 0, 0.0, 0.0, 0.0, (92, 92))
VIEW = Style(40, 25, 15, (0.6, 0.85), 0.08, (0.85, 1.0), 1, 4, 0.4, 0.5, 3.0, (80, 92))
SHOPPER = Style(50, 30, 20, (0.55, 0.85), 0.1, (0.8, 1.0), 1, 6, 0.7, 1.0, 6.0, (40, 75))
STYLES = {"catalog": CATALOG, "view": VIEW, "shopper": SHOPPER}


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def projected_corners(size: int, yaw: float, pitch: float, roll: float, scale: float, cx: float,
                      cy: float) -> np.ndarray:
    """Image positions (4, 2) of the texture's corners after a 3-D turn and a pinhole projection."""
    half = size / 2
    corners = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], dtype=np.float64)
    focal = 2.2 * size  # a moderate lens: perspective is visible but not extreme
    pts = corners @ _rotation(yaw, pitch, roll).T
    pts[:, 2] += focal
    proj = pts[:, :2] * (focal / pts[:, 2:3])
    return proj * scale + np.array([cx, cy])


def perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients mapping output points `dst` back to input points `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64)))


def _background(rng: np.random.Generator, size: int, style: Style) -> Image.Image:
    if style.clutter == 0:
        return Image.new("RGB", (size, size), (255, 255, 255))
    # muted surfaces (walls, tables, shelves): low saturation, so the product stands out
    a = rng.integers(90, 220) + rng.integers(-20, 21, 3)
    b = rng.integers(90, 220) + rng.integers(-20, 21, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    grad = (a * (1 - t) + b * t).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(grad, (size, size, 3)).copy(), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(style.clutter // 2, style.clutter + 1))):
        x, y = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.3, 2) * size
        grey = rng.integers(60, 220)
        fill = tuple(int(np.clip(grey + c, 0, 255)) for c in rng.integers(-40, 41, 3))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse([x, y, x + w, y + h], fill=fill)
        elif kind == 1:
            draw.rectangle([x, y, x + w, y + h], fill=fill)
        else:
            draw.line([x, y, x + w, y + h], fill=fill, width=max(1, int(rng.uniform(0.01, 0.04) * size)))
    return img


def _occlude(rng: np.random.Generator, img: Image.Image, style: Style, cx: float, cy: float, extent: float) -> None:
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, style.occluders + 1))):
        w, h = rng.uniform(0.2, 0.45, 2) * extent
        x = cx + rng.uniform(-0.7, 0.7) * extent - w / 2
        y = cy + rng.uniform(-0.7, 0.7) * extent - h / 2
        if rng.random() < 0.5:  # a hand in front of the product
            skin = (int(rng.integers(150, 235)), int(rng.integers(110, 190)), int(rng.integers(90, 160)))
            draw.ellipse([x, y, x + w, y + h * 1.4], fill=skin)
        else:
            draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))


def _relight(rng: np.random.Generator, arr: np.ndarray, light: float) -> np.ndarray:
    size = arr.shape[0]
    cast = 1 + light * rng.normal(0, 0.12, 3)
    bright = np.exp(light * rng.normal(0, 0.22))
    ang = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1 + light * 0.4 * (x * np.cos(ang) + y * np.sin(ang))
    return arr * cast[None, None, :] * bright * ramp[..., None]


def photograph(rng: np.random.Generator, texture: Image.Image, size: int, style: Style) -> Image.Image:
    """One photo of an item's RGBA front texture under a random draw of the style."""
    yaw, pitch, roll = (rng.uniform(-m, m) if m else 0.0 for m in (style.yaw, style.pitch, style.roll))
    scale = rng.uniform(*style.scale) * size / texture.width
    cx = size / 2 + rng.uniform(-style.shift, style.shift) * size
    cy = size / 2 + rng.uniform(-style.shift, style.shift) * size
    dst = projected_corners(texture.width, yaw, pitch, roll, scale, cx, cy)
    w = texture.width
    src = np.array([[0, 0], [w, 0], [w, w], [0, w]], dtype=np.float64)
    warped = texture.transform((size, size), Image.Transform.PERSPECTIVE, perspective_coeffs(dst, src),
                               Image.Resampling.BICUBIC)
    img = _background(rng, size, style)
    img.paste(warped, (0, 0), warped)
    if style.occluders:
        _occlude(rng, img, style, cx, cy, scale * w)
    keep = rng.uniform(*style.crop)
    if keep < 1.0:
        side = keep * size
        x0, y0 = rng.uniform(0, size - side, 2)
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    if style.light or style.noise:
        arr: np.ndarray = np.asarray(img, dtype=np.float32)
        if style.light:
            arr = _relight(rng, arr, style.light)
        if style.noise:
            arr = arr + rng.normal(0, rng.uniform(0, style.noise), arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if style.blur:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, style.blur))))
    return img


def jpeg_bytes(rng: np.random.Generator, img: Image.Image, style: Style) -> bytes:
    """Encode as JPEG at a quality drawn from the style (deterministic for a given libjpeg)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(style.jpeg[0], style.jpeg[1] + 1)), optimize=False)
    return buf.getvalue()
