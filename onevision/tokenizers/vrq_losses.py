"""The VRQ training losses (OneVision 3.1.3, eqs. 3, 4, 7 and 8); commitment (eq. 6) lives
beside its quantizer in residual_quantizer.py (`commitment_term`).

All take a batch of N positive pairs: row i of the "1" tensors and row i of the "2" tensors
show the same product (two views, or a view and a shopper photo); other rows are negatives.
Embeddings are unit vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def consistency_loss(f1: torch.Tensor, f2: torch.Tensor, v1: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Eq. 3: fused-feature consistency (f1 vs f2) plus cross-modal alignment (v1 vs f2), InfoNCE."""
    labels = torch.arange(len(f1), device=f1.device)
    return F.cross_entropy(f1 @ f2.T / tau, labels) + F.cross_entropy(v1 @ f2.T / tau, labels)


def margin_loss(f1: torch.Tensor, f2: torch.Tensor, v1: torch.Tensor, gamma: float = 0.2) -> torch.Tensor:
    """Eq. 4: every negative similarity must stay `gamma` below the positive one, for the
    fused-to-fused (s^f2f) and visual-to-fused (s^v2f) similarities. (The paper prints the hinge
    as max(0, -gamma + s_ij - s_ii); we use the usual max(0, gamma + s_ij - s_ii), j != i, so
    that gamma > 0 is a margin.)"""
    off = ~torch.eye(len(f1), dtype=torch.bool, device=f1.device)
    total = f1.new_zeros(())
    for s in (f1 @ f2.T, v1 @ f2.T):
        total = total + (F.relu(gamma + s - s.diagonal().unsqueeze(1)) * off).sum() / len(f1)
    return total


def hierarchical_consistency_loss(x1: torch.Tensor, x2: torch.Tensor, codes1: torch.Tensor, codes2: torch.Tensor,
                                  codebooks: list[torch.Tensor], temperature: float = 0.02) -> torch.Tensor:
    """Eq. 7: paired views get the same code at every level, i.e. the same quantized prefix f^(l).

    Eq. 7 compares the quantized prefixes directly; through a straight-through estimator that
    term has no gradient once two views share a code and none that keeps them off a cell
    boundary. We make it differentiable: at level l, view 2's residual taken along view 1's
    path, x2 - sum_{k<l} e(c1_k), must pick view 1's code c1_l under a softmax over negative
    squared distances to the level-l codewords (cross-entropy), and symmetrically. It is ~0
    exactly when both views sit well inside the same cell at every level."""
    loss = x1.new_zeros(())
    prefix1 = torch.zeros_like(x1)
    prefix2 = torch.zeros_like(x2)
    for level, book in enumerate(codebooks):
        book = book.detach()
        for x, prefix, codes in ((x2, prefix1, codes1), (x1, prefix2, codes2)):
            logits = -torch.cdist(x - prefix, book) ** 2 / temperature
            loss = loss + F.cross_entropy(logits, codes[:, level])
        prefix1 = prefix1 + book[codes1[:, level]]
        prefix2 = prefix2 + book[codes2[:, level]]
    return loss


def vrq_loss(cons: torch.Tensor, mar: torch.Tensor, commit: torch.Tensor, hc: torch.Tensor,
             betas: tuple[float, float, float, float] = (1.0, 0.5, 0.25, 0.5)) -> torch.Tensor:
    """Eq. 8: beta1 L_cons + beta2 L_mar + beta3 L_commit + beta4 L_hc."""
    b1, b2, b3, b4 = betas
    return b1 * cons + b2 * mar + b3 * commit + b4 * hc
