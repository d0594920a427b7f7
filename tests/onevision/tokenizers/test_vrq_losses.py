"""VRQ losses (eqs. 3, 4, 7, 8) on cases where their value is known."""

import math

import torch

from onevision.tokenizers.vrq_losses import consistency_loss, hierarchical_consistency_loss, margin_loss, vrq_loss


def test_consistency_loss_on_orthonormal_pairs():
    n, tau = 3, 0.5
    e = torch.eye(n)
    one_term = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1)))
    assert torch.isclose(consistency_loss(e, e, e, tau), torch.tensor(2 * one_term), atol=1e-5)


def test_margin_loss_zero_when_separated_and_known_when_collapsed():
    e = torch.eye(4)
    assert margin_loss(e, e, e, gamma=0.2) == 0  # s_ii = 1, s_ij = 0: every hinge inactive
    same = torch.nn.functional.normalize(torch.ones(4, 3), dim=1)  # everything collapsed: s = 1
    # each of the N(N-1) off-diagonal hinges is gamma, for f2f and v2f, divided by N
    assert torch.isclose(margin_loss(same, same, same, gamma=0.2), torch.tensor(2 * 3 * 0.2), atol=1e-5)


def test_hierarchical_consistency():
    a = [torch.zeros(2, 3), torch.ones(2, 3)]
    b = [torch.zeros(2, 3), torch.zeros(2, 3)]
    assert hierarchical_consistency_loss(a, b) == 3.0  # level 2 differs by 1 in 3 dims
    assert hierarchical_consistency_loss(a, a) == 0.0


def test_total_is_the_weighted_sum():
    parts = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert vrq_loss(*parts, betas=(1.0, 0.5, 0.25, 2.0)) == 1.0 + 1.0 + 0.75 + 8.0
