"""Stage 1, pretraining (OneVision 3.2.1): align images, titles, categories and SIDs with four
tasks: image -> SID, image + title -> SID, image -> category, image + title -> category, all
next-token cross-entropy (eq. 9: `losses.ntp_loss`, `losses.category_ntp_loss`). Data: every
catalog image and item view (`GeneratorData.pretrain`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onevision.generator.data import CATEGORY_TASK, SID_TASK, GeneratorData
from onevision.generator.losses import category_ntp_loss
from onevision.generator.model import OneVisionGenerator
from training.loop import StageConfig, run_stage
from training.sft import batch_ntp_loss

PRESETS = {"tiny": StageConfig(epochs=2, batch_size=64, lr=2e-3),
           "small": StageConfig(epochs=1, batch_size=128, lr=3e-3)}
PRESETS["quick"] = PRESETS["small"]


def run(model: OneVisionGenerator, data: GeneratorData, cfg: StageConfig, workdir: Path, progress: bool = True) -> dict:
    ex = data.pretrain(cfg.seed)

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        sid, cat = idx[ex.task[idx] == SID_TASK], idx[ex.task[idx] == CATEGORY_TASK]
        loss = torch.zeros(())
        if len(sid):
            loss = loss + batch_ntp_loss(model, data, ex, sid) * len(sid) / len(idx)
        if len(cat):
            prompts = ex.prompts(data.tokens, data.bank, cat)
            loss = loss + category_ntp_loss(model, prompts, torch.from_numpy(ex.category[cat])) * len(cat) / len(idx)
        return loss

    return run_stage("pretrain", model, len(ex), loss_fn, cfg, workdir, progress)
