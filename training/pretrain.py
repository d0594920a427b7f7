"""Stage 1, pretraining (OneVision 3.2.1): align images, titles, categories and SIDs with four
tasks: image -> SID, image + title -> SID, image -> category, image + title -> category, all
next-token cross-entropy (eq. 9). Data: every catalog image and item view
(`GeneratorData.pretrain`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onevision.generator.model import OneVisionGenerator
from onevision.generator.data import CATEGORY_TASK, SID_TASK, GeneratorData
from training.loop import StageConfig, run_stage
from training.sft import ntp_loss

PRESETS = {"tiny": StageConfig(epochs=2, batch_size=64, lr=2e-3), "small": StageConfig(epochs=1, batch_size=128, lr=3e-3)}


def run(model: OneVisionGenerator, data: GeneratorData, cfg: StageConfig, workdir: Path, progress: bool = True) -> dict:
    ex = data.pretrain(cfg.seed)

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        sid, cat = idx[ex.task[idx] == SID_TASK], idx[ex.task[idx] == CATEGORY_TASK]
        loss = torch.zeros(())
        if len(sid):
            loss = loss + ntp_loss(model, data, ex, sid) * len(sid) / len(idx)
        if len(cat):
            logits = model.category_logits(ex.prompts(data.tokens, data.bank, cat))
            loss = loss + F.cross_entropy(logits, torch.from_numpy(ex.category[cat])) * len(cat) / len(idx)
        return loss

    return run_stage("pretrain", model, len(ex), loss_fn, cfg, workdir, progress)
