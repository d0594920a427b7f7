"""Every training loss of the generator, named for its paper equation, so the recipes
(`training/*.py`) and the streaming DPO job share one copy of the math.

| function | equation |
|---|---|
| `ntp_loss` | OneVision eq. 9: next-token loss over the SID levels (pretrain, SFT, personalized SFT) |
| `category_ntp_loss` | OneVision eq. 9 with T = 1: pretraining tasks (iii) and (iv), image (+ title) -> category |
| `listwise_dpo_loss` | OneVision eq. 10: list-wise DPO, one purchase against its session's negatives |
| `onesearch_nll_term` | OneSearch eq. 11's alpha log pi_theta(i_w) term: NLL of the purchase beside DPO |
| `dpo_objective` | eq. 10 + OneSearch eq. 11's NLL term, what the DPO stages minimise |
| `distill_kl_per_level` | OneVision eq. 11: KL(teacher || student) per SID level, for visual-token pruning |

Both papers number an equation 11; the names say which: `onesearch_nll_term` is OneSearch's,
`distill_kl_per_level` OneVision's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onevision.generator.model import OneVisionGenerator


def ntp_loss(model: OneVisionGenerator, prompts, targets: torch.Tensor) -> torch.Tensor:
    """OneVision eq. 9, -sum_k log P(t_k | u, t_<k) over the L levels of each target SID (N, L),
    teacher-forced. Averaged per token (divided by L) so that its scale does not depend on the
    SID length; the pretrain, SFT and personalized SFT recipes (and `train distill --loss ntp`)
    minimise it."""
    return -model.sid_logprob(prompts, targets).mean() / targets.shape[-1]


def category_ntp_loss(model: OneVisionGenerator, prompts, categories: torch.Tensor) -> torch.Tensor:
    """OneVision eq. 9 for pretraining tasks (iii) and (iv), whose target is one category token
    (T = 1): cross-entropy of the category head, averaged over the examples."""
    logits = model.category_logits(prompts)
    return F.cross_entropy(logits, categories.to(logits.device))


def candidate_logprob(model: OneVisionGenerator, prompts, candidates: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y | x_s) (B, C) of each prompt's candidate SIDs (B, C, L; -1 rows pad) and which are
    real: the inputs of eq. 10, column 0 the purchase."""
    cands = torch.from_numpy(candidates).to(model.device)
    valid = (cands >= 0).all(-1)
    return model.sid_logprob(prompts, cands.clamp(min=0)), valid


def listwise_dpo_loss(policy: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """OneVision eq. 10 per session: -log sigmoid(-log sum_neg exp(beta r_neg) + beta r_pos), where
    r = log pi_theta - log pi_ref; column 0 is the purchased item, `valid` masks padded negatives."""
    r = beta * (policy - reference)
    neg = r[:, 1:].masked_fill(~valid[:, 1:], float("-inf"))
    return -F.logsigmoid(r[:, 0] - torch.logsumexp(neg, dim=1))


def onesearch_nll_term(purchase_logprob: torch.Tensor, levels: int, weight: float = 1.0) -> torch.Tensor:
    """OneSearch eq. 11's `alpha log pi_theta(i_w | x_u)` term (not OneVision's eq. 11, which is
    `distill_kl_per_level`): `weight` x the per-token NLL of the purchased SIDs (B,), added to the
    DPO loss to keep the policy from drifting away from what was bought. OneSearch's reward-
    weighted hinge inside its eq. 11 is not used; its DPO part is OneVision's eq. 10."""
    return -(weight * purchase_logprob.mean()) / levels


def dpo_objective(policy: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, beta: float,
                  nll_weight: float, levels: int) -> torch.Tensor:
    """Mean OneVision eq. 10 over sessions, plus `onesearch_nll_term` of the purchase (column 0);
    `nll_weight` 0 is pure eq. 10. Shared by the offline DPO stage and the streaming DPO job."""
    loss = listwise_dpo_loss(policy, reference, valid, beta).mean()
    if nll_weight:
        loss = loss + onesearch_nll_term(policy[:, 0], levels, nll_weight)
    return loss


def distill_kl_per_level(student: OneVisionGenerator, teacher: OneVisionGenerator, prompts,
                         targets: torch.Tensor) -> torch.Tensor:
    """OneVision eq. 11 (not OneSearch's, which is `onesearch_nll_term`): the sum over SID levels of
    KL(pi_ref(t_k | u, t_<k) || pi_theta(t_k | u, t_<k)), teacher (pi_ref, frozen) against the pruned
    student, teacher-forced along `targets` (N, L), averaged over the examples."""
    with torch.no_grad():
        ref = teacher.level_logprobs(prompts, targets)
    ours = student.level_logprobs(prompts, targets)
    return sum(F.kl_div(s, r, log_target=True, reduction="batchmean")  # type: ignore[return-value]  # >= 1 level
               for s, r in zip(ours, ref))
