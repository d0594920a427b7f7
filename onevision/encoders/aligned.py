"""The image encoder V after multi-view alignment: EfficientNet-Lite0 with a trained top.

The first `split_block` blocks (the trunk) keep their ImageNet weights; the last blocks, the
head conv and a projection to `dim` are trained with the alignment loss (eq. 1). Freezing the
trunk lets training run on cached trunk features, which is what makes alignment affordable
on a CPU, and keeps generic low-level filters intact. BatchNorm statistics stay frozen too.

Artifact: `encoder.safetensors` + `config.json` in a registry version (see registry.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from onevision.encoders.base import ImageEncoder
from onevision.encoders.efficientnet import INPUT_MEAN, INPUT_STD, EfficientNetLite0, EncoderOutput, load_pretrained
from onevision.images import to_array

WEIGHTS = "encoder.safetensors"


@dataclass(frozen=True)
class AlignedConfig:
    split_block: int = 11  # blocks [0, split) are the frozen trunk
    dim: int = 256  # embedding size after projection
    input_size: int = 128


class AlignedEfficientNet(nn.Module):
    def __init__(self, cfg: AlignedConfig, backbone: EfficientNetLite0 | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone or EfficientNetLite0()
        self.proj = nn.Linear(EfficientNetLite0.embed_dim, cfg.dim)
        for name, p in self.backbone.named_parameters():
            p.requires_grad = self._trainable(name)

    def _trainable(self, name: str) -> bool:
        if name.startswith("_blocks."):
            return int(name.split(".")[1]) >= self.cfg.split_block
        return name.startswith(("_conv_head", "_bn1"))

    def train(self, mode: bool = True) -> "AlignedEfficientNet":
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm statistics in every mode
        return self

    def preprocess(self, images: Sequence) -> torch.Tensor:
        x = torch.from_numpy(np.stack([to_array(img, self.cfg.input_size) for img in images])).permute(0, 3, 1, 2)
        return (x - torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)) / torch.tensor(INPUT_STD).view(1, 3, 1, 1)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        h = F.relu6(b._bn0(b._conv_stem(x)))
        for block in b._blocks[: self.cfg.split_block]:
            h = block(h)
        return h

    def head(self, h: torch.Tensor) -> EncoderOutput:
        b = self.backbone
        for block in b._blocks[self.cfg.split_block :]:
            h = block(h)
        pooled = F.relu6(b._bn1(b._conv_head(h))).mean(dim=(2, 3))
        return EncoderOutput(embedding=F.normalize(self.proj(pooled), dim=-1), tokens=h.flatten(2).transpose(1, 2))

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return self.head(self.trunk(x))

    @classmethod
    def from_pretrained(cls, cfg: AlignedConfig, seed: int = 0) -> "AlignedEfficientNet":
        torch.manual_seed(seed)
        return cls(cfg, load_pretrained())

    def save(self, folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS)
        (folder / "aligned_config.json").write_text(json.dumps(asdict(self.cfg)))
        return {WEIGHTS: folder / WEIGHTS}

    @classmethod
    def load(cls, version_dir: str | Path) -> "AlignedEfficientNet":
        """Load from a registry version (weights checked against the manifest first)."""
        from onevision.registry import load_version

        _, config = load_version(version_dir)
        if config.get("kind") != "aligned-efficientnet":
            raise ValueError(f"{version_dir} holds a {config.get('kind')!r} artifact, not an aligned encoder")
        model = cls(AlignedConfig(**config["encoder"]))
        state = load_file(Path(version_dir) / WEIGHTS)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{version_dir}: weights do not match the config: {str(exc).splitlines()[0]}") from None
        return model.eval()


class AlignedImageEncoder(ImageEncoder):
    """`ImageEncoder` over an aligned model (for evaluation and indexing)."""

    name = "aligned"

    def __init__(self, model: AlignedEfficientNet, batch_size: int = 64):
        self.model = model.eval()
        self.dim = model.cfg.dim
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode_arrays(self, images: Sequence) -> np.ndarray:
        return self.model.encode(self.model.preprocess(images)).embedding.numpy().astype(np.float32)
