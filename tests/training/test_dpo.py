"""List-wise DPO (OneVision eq. 10): the formula on hand values, padded negatives ignored, and the
gradient pushes the purchased item up relative to the reference."""

import math

import torch

from onevision.generator.losses import listwise_dpo_loss


def test_matches_eq_10_by_hand():
    policy = torch.tensor([[-1.0, -2.0, -3.0]])
    reference = torch.tensor([[-1.5, -1.0, -3.5]])
    beta = 0.5
    r_pos, r_negs = beta * 0.5, [beta * -1.0, beta * 0.5]
    want = -math.log(1 / (1 + math.exp(-(r_pos - math.log(sum(math.exp(r) for r in r_negs))))))
    got = listwise_dpo_loss(policy, reference, torch.ones(1, 3, dtype=torch.bool), beta)
    assert math.isclose(float(got[0]), want, rel_tol=1e-6)


def test_padded_negatives_do_not_count():
    policy = torch.tensor([[-1.0, -2.0, -9.0]])
    reference = torch.tensor([[-1.0, -2.5, 5.0]])
    valid = torch.tensor([[True, True, False]])
    one_neg = listwise_dpo_loss(policy[:, :2], reference[:, :2], valid[:, :2], 0.1)
    assert torch.allclose(listwise_dpo_loss(policy, reference, valid, 0.1), one_neg)


def test_gradient_raises_the_purchase_and_lowers_the_negatives():
    policy = torch.zeros(1, 3, requires_grad=True)
    listwise_dpo_loss(policy, torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 0.1).sum().backward()
    assert policy.grad[0, 0] < 0 and (policy.grad[0, 1:] > 0).all()
