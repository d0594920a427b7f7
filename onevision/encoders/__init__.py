"""Image encoders behind one interface (`ImageEncoder`): raw pixels, pretrained EfficientNet-Lite0,
and an aligned (fine-tuned) encoder loaded from a registry version."""

from __future__ import annotations

from onevision.encoders.base import ImageEncoder

ENCODERS = ("pixels", "efficientnet")


def get_encoder(name: str) -> ImageEncoder:
    """Build an encoder by name, or from a registry path of an aligned encoder; heavy imports
    happen only for the one asked for."""
    if name == "pixels":
        from onevision.encoders.pixels import PixelEncoder

        return PixelEncoder()
    if name == "efficientnet":
        from onevision.encoders.efficientnet import EfficientNetEncoder

        return EfficientNetEncoder()
    from pathlib import Path

    if Path(name).exists():
        from onevision.encoders.aligned import AlignedEfficientNet, AlignedImageEncoder
        from onevision.registry import resolve

        return AlignedImageEncoder(AlignedEfficientNet.load(resolve(name)))
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)} "
                     "or give an aligned encoder's registry path")


__all__ = ["ENCODERS", "ImageEncoder", "get_encoder"]
