"""Alignment losses (eq. 1) on cases where their value is known."""

import math

import torch

from onevision.encoders.alignment_losses import alignment_loss, circle_loss, info_nce


def test_info_nce_on_orthonormal_pairs():
    n, tau = 4, 0.1
    a = torch.eye(n)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1)))
    assert torch.isclose(info_nce(a, a, tau), torch.tensor(expected), atol=1e-5)


def test_info_nce_prefers_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    shuffled = a[torch.randperm(8, generator=g)]
    assert info_nce(a, a) < info_nce(a, shuffled)


def test_circle_loss_value_and_finite_gradients():
    # one positive at similarity 1 and negatives at 0 with margin 0.25: optimum reached on both sides
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    pos = torch.eye(2, dtype=torch.bool)
    loss = circle_loss(sim, pos, margin=0.25, gamma=32)
    # logit_p = -0.25 * (1 - 0.75) * 32 = -2, logit_n = 0.25 * (0 - 0.25) * 32 = -2 -> softplus(-4)
    assert torch.isclose(loss, torch.nn.functional.softplus(torch.tensor(-4.0)), atol=1e-5)
    loss.backward()
    assert torch.isfinite(sim.grad).all()


def test_alignment_loss_is_the_weighted_sum():
    a = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    b = torch.nn.functional.normalize(a + 0.1 * torch.randn(5, 8), dim=1)
    only_cl = alignment_loss(a, b, 1.0, 0.0)
    only_circle = alignment_loss(a, b, 0.0, 1.0)
    assert torch.isclose(alignment_loss(a, b, 2.0, 3.0), 2 * only_cl + 3 * only_circle, atol=1e-5)
