"""Stage 3, personalized SFT (OneVision 3.2.3, OneSearch 3.3 and 3.4.1): the SFT task with the
scene, the user's long-term SID and short-term SIDs in the prompt, features as of the request
time, plus OneSearch's sliding-window augmentation over the short-term sequence
(`GeneratorData.personalized`); the loss is SFT's, eq. 9 (`losses.ntp_loss`)."""

from __future__ import annotations

from pathlib import Path

from onevision.generator.data import GeneratorData
from onevision.generator.model import OneVisionGenerator
from training import sft
from training.loop import StageConfig

PRESETS = {"tiny": StageConfig(epochs=3, batch_size=64, lr=1e-3),
           "small": StageConfig(epochs=4, batch_size=128, lr=1e-3),
           "quick": StageConfig(epochs=2, batch_size=128, lr=1e-3)}


def run(model: OneVisionGenerator, data: GeneratorData, cfg: StageConfig, workdir: Path, progress: bool = True) -> dict:
    return sft.run(model, data, cfg, workdir, progress, examples=data.personalized(cfg.seed), name="personalized-sft")
