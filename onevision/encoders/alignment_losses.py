"""Losses that align multi-view images of one product (OneVision eq. 1).

L_align = lambda1 * L_cl + lambda2 * L_circle: a symmetric InfoNCE contrastive loss pulls each
positive pair together against the other pairs in the batch, and the circle loss (Sun et al.,
CVPR 2020) re-weights each similarity by how far it is from its optimum, which sharpens the
separation between positives and hard negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Symmetric InfoNCE over unit vectors: row i of `a` and row i of `b` are the positives."""
    logits = a @ b.T / tau
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def circle_loss(sim: torch.Tensor, positive: torch.Tensor, margin: float = 0.25, gamma: float = 32.0) -> torch.Tensor:
    """Circle loss over a similarity matrix; `positive` marks the positive pairs of each row."""
    ap = torch.clamp_min(1 + margin - sim.detach(), 0)  # weight of a positive: large when far from 1
    an = torch.clamp_min(sim.detach() + margin, 0)  # weight of a negative: large when close
    never = torch.full_like(sim, float("-inf"))  # masked entries are constants, so gradients stay finite
    logit_p = torch.where(positive, -ap * (sim - (1 - margin)) * gamma, never)
    logit_n = torch.where(positive, never, an * (sim - margin) * gamma)
    return F.softplus(torch.logsumexp(logit_n, dim=1) + torch.logsumexp(logit_p, dim=1)).mean()


def alignment_loss(a: torch.Tensor, b: torch.Tensor, lambda_cl: float = 1.0, lambda_circle: float = 0.1,
                   tau: float = 0.05, margin: float = 0.25, gamma: float = 32.0) -> torch.Tensor:
    """Eq. 1 on a batch of positive pairs (a_i, b_i) of unit vectors; other rows are negatives."""
    sim = a @ b.T
    positive = torch.eye(len(a), dtype=torch.bool, device=a.device)
    return lambda_cl * info_nce(a, b, tau) + lambda_circle * circle_loss(sim, positive, margin, gamma)
