"""Stage 2, SFT for collaborative feature learning (OneVision 3.2.2): shopper photos and the
items' other views -> the matched item's SID, next-token cross-entropy (eq. 9,
`onevision/generator/losses.py` `ntp_loss`). No user features yet (`GeneratorData.sft`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onevision.generator.data import Examples, GeneratorData
from onevision.generator.losses import ntp_loss
from onevision.generator.model import OneVisionGenerator
from training.loop import StageConfig, run_stage

PRESETS = {"tiny": StageConfig(epochs=3, batch_size=64, lr=2e-3),
           "small": StageConfig(epochs=8, batch_size=128, lr=3e-3),
           "quick": StageConfig(epochs=4, batch_size=128, lr=3e-3)}


def batch_ntp_loss(model: OneVisionGenerator, data: GeneratorData, ex: Examples, idx: np.ndarray) -> torch.Tensor:
    """Eq. 9 (`losses.ntp_loss`) on the examples `idx`: their prompts and target SIDs."""
    return ntp_loss(model, ex.prompts(data.tokens, data.bank, idx), torch.from_numpy(ex.target[idx]))


def run(model: OneVisionGenerator, data: GeneratorData, cfg: StageConfig, workdir: Path, progress: bool = True,
        examples: Examples | None = None, name: str = "sft") -> dict:
    ex = examples if examples is not None else data.sft()
    return run_stage(name, model, len(ex), lambda idx: batch_ntp_loss(model, data, ex, idx), cfg, workdir, progress)
