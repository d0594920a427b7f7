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
    books = [torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[0.0, 0.3], [0.0, -0.3]])]
    x = torch.tensor([[1.0, 0.3], [-1.0, -0.3]])
    codes = torch.tensor([[0, 0], [1, 1]])
    # both views exactly on the same codewords: cross-entropy is ~0
    assert hierarchical_consistency_loss(x, x, codes, codes, books, temperature=0.01) < 1e-6
    # view 2 of the first pair sits in the other level-1 cell: the loss is large, and its gradient
    # moves view 2 toward view 1's codeword
    x2 = torch.tensor([[-1.0, 0.3], [-1.0, -0.3]], requires_grad=True)
    codes2 = torch.tensor([[1, 0], [1, 1]])
    loss = hierarchical_consistency_loss(x, x2, codes, codes2, books, temperature=0.01)
    assert loss > 100
    loss.backward()
    assert x2.grad[0, 0] < 0  # descending the gradient increases x2[0, 0], toward +1


def test_total_is_the_weighted_sum():
    parts = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert vrq_loss(*parts, betas=(1.0, 0.5, 0.25, 2.0)) == 1.0 + 1.0 + 0.75 + 8.0
