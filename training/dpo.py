"""Stage 4, list-wise DPO (OneVision eq. 10) against a frozen reference, on logged sessions:
the purchased item against clicked-not-bought and exposed-not-clicked items, optionally plus
OneSearch eq. 11's NLL term on the purchased item to keep the policy from drifting."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onevision.generator.model import OneVisionGenerator
from onevision.generator.data import Examples, GeneratorData
from training.loop import StageConfig, run_stage


@dataclass(frozen=True)
class DPOConfig(StageConfig):
    beta: float = 0.1
    nll_weight: float = 1.0  # OneSearch eq. 11; 0 = pure eq. 10


PRESETS = {"tiny": DPOConfig(epochs=1, batch_size=32, lr=2e-4), "small": DPOConfig(epochs=1, batch_size=64, lr=1e-4)}


def listwise_dpo_loss(policy: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 10 per session: -log sigmoid(-log sum_neg exp(beta r_neg) + beta r_pos), where
    r = log pi_theta - log pi_ref; column 0 is the purchased item, `valid` masks padded negatives."""
    r = beta * (policy - reference)
    neg = r[:, 1:].masked_fill(~valid[:, 1:], float("-inf"))
    return -F.logsigmoid(r[:, 0] - torch.logsumexp(neg, dim=1))


def dpo_objective(policy: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, beta: float,
                  nll_weight: float, levels: int) -> torch.Tensor:
    """Mean eq. 10 over sessions, plus `nll_weight` x OneSearch eq. 11's per-token NLL of the
    purchased item (column 0)."""
    loss = listwise_dpo_loss(policy, reference, valid, beta).mean()
    if nll_weight:
        loss = loss - nll_weight * policy[:, 0].mean() / levels
    return loss


def candidate_logprob(model: OneVisionGenerator, prompts, candidates: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (B, C) of each prompt's candidate SIDs (B, C, L; -1 rows pad) and which are real."""
    cands = torch.from_numpy(candidates)
    valid = (cands >= 0).all(-1)
    return model.sid_logprob(prompts, cands.clamp(min=0)), valid


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
