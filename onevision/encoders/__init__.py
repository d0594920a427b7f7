"""Image encoders behind one interface (`ImageEncoder`): raw pixels and EfficientNet-Lite0."""

from __future__ import annotations

from onevision.encoders.base import ImageEncoder

ENCODERS = ("pixels", "efficientnet")


def get_encoder(name: str) -> ImageEncoder:
    """Build an encoder by name; heavy imports happen only for the one asked for."""
    if name == "pixels":
        from onevision.encoders.pixels import PixelEncoder

        return PixelEncoder()
    if name == "efficientnet":
        from onevision.encoders.efficientnet import EfficientNetEncoder

        return EfficientNetEncoder()
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


__all__ = ["ENCODERS", "ImageEncoder", "get_encoder"]
