"""Stage 4, list-wise DPO (OneVision eq. 10) against a frozen reference, on logged sessions:
the purchased item against clicked-not-bought and exposed-not-clicked items, optionally plus
OneSearch eq. 11's NLL term on the purchased item to keep the policy from drifting. The math is
in `onevision/generator/losses.py` (`dpo_objective`), shared with the streaming DPO job."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onevision.generator.data import Examples, GeneratorData
from onevision.generator.losses import candidate_logprob, dpo_objective
from onevision.generator.model import OneVisionGenerator
from training.loop import StageConfig, run_stage


@dataclass(frozen=True)
class DPOConfig(StageConfig):
    beta: float = 0.1
    nll_weight: float = 1.0  # OneSearch eq. 11's NLL term (`losses.onesearch_nll_term`); 0 = pure eq. 10


PRESETS = {"tiny": DPOConfig(epochs=1, batch_size=32, lr=2e-4), "small": DPOConfig(epochs=1, batch_size=64, lr=1e-4)}


def run(model: OneVisionGenerator, data: GeneratorData, cfg: DPOConfig, workdir: Path, progress: bool = True,
        examples: Examples | None = None, reference: OneVisionGenerator | None = None) -> dict:
    ex = examples if examples is not None else data.dpo()
    keep = np.flatnonzero((ex.candidates[:, 1:] >= 0).all(-1).any(-1))  # sessions with at least one negative
    ex = ex.take(keep)
    ref = reference if reference is not None else copy.deepcopy(model)
    ref.eval().requires_grad_(False)

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        prompts = ex.prompts(data.tokens, data.bank, idx)
        policy, valid = candidate_logprob(model, prompts, ex.candidates[idx])
        with torch.no_grad():
            reference_lp, _ = candidate_logprob(ref, prompts, ex.candidates[idx])
        return dpo_objective(policy, reference_lp, valid, cfg.beta, cfg.nll_weight, data.levels)

    return run_stage("dpo", model, len(ex), loss_fn, cfg, workdir, progress)
