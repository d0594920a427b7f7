"""Visual-token selection (OneVision 3.3): kept tokens are actual tokens, one per cluster, and
the curriculum is eq. 12."""

import math

import pytest
import torch

from onevision.generator.token_pruning import curriculum, select_tokens


def test_curriculum_is_eq_12():
    assert curriculum(197, 33, 4) == [156, 115, 74, 33]  # the paper's 197 -> 33 over four epochs
    v_max, v_sub, epochs = 17, 3, 5
    got = curriculum(v_max, v_sub, epochs)
    assert got == [math.floor(v_max - e / epochs * (v_max - v_sub)) for e in range(1, epochs + 1)]
    assert got[-1] == v_sub and all(a >= b for a, b in zip(got, got[1:]))
    assert curriculum(10, 10, 3) == [10, 10, 10]
    with pytest.raises(ValueError):
        curriculum(5, 6, 2)
    with pytest.raises(ValueError):
        curriculum(5, 2, 0)


def blobs(b: int, k: int, per: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens in k well-separated groups per image, shuffled; (tokens, group of each token)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(b, k, d, generator=g) * 20
    group = torch.stack([torch.randperm(k * per, generator=g) % k for _ in range(b)])
    x = centres[torch.arange(b).unsqueeze(1), group] + 0.1 * torch.randn(b, k * per, d, generator=g)
    return x, group


def test_one_actual_token_per_cluster_batched():
    x, group = blobs(b=6, k=5, per=7)
    keep = select_tokens(x, 5)
    assert keep.shape == (6, 5) and (keep.diff(dim=1) > 0).all()  # distinct, ascending
    for r in range(6):
        assert sorted(group[r, keep[r]].tolist()) == list(range(5))  # every group kept exactly once
        members = [(group[r] == c).nonzero().flatten() for c in range(5)]
        for c, idx in enumerate(members):  # the kept token is the one nearest its group's centre
            centre = x[r, idx].mean(0)
            nearest = idx[(x[r, idx] - centre).norm(dim=1).argmin()]
            assert nearest in keep[r]
    single = torch.stack([select_tokens(x[r:r + 1], 5)[0] for r in range(6)])
    assert torch.equal(single, keep)  # the batch changes nothing
    assert torch.equal(select_tokens(x, 5), keep)  # deterministic


def test_edge_cases():
    x = torch.randn(2, 6, 4)
    assert torch.equal(select_tokens(x, 6), torch.arange(6).expand(2, 6))
    dup = torch.zeros(1, 6, 4)  # all tokens equal: still k distinct actual tokens
    keep = select_tokens(dup, 3)
    assert len(set(keep[0].tolist())) == 3 and keep.max() < 6
    with pytest.raises(ValueError):
        select_tokens(x, 7)
