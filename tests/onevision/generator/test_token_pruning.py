"""Visual-token selection (OneVision 3.3): kept tokens are actual tokens, one per cluster, and
the curriculum is eq. 12."""

import math

import pytest
import torch

from onevision.generator.prompt.token_pruning import curriculum, prune_span, select_tokens


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
        for _, idx in enumerate(members):  # the kept token is the one nearest its group's centre
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


def test_selection_never_depends_on_the_batch():
    """Unclustered tokens, where k-means++ seeds matter: an image selects the same tokens alone,
    in any batch and at any position in it."""
    x = torch.randn(9, 17, 16, generator=torch.Generator().manual_seed(3))
    keep = select_tokens(x, 4)
    for r in range(9):
        assert torch.equal(select_tokens(x[r:r + 1], 4)[0], keep[r])
    shuffled = torch.randperm(9, generator=torch.Generator().manual_seed(4))
    assert torch.equal(select_tokens(x[shuffled], 4), keep[shuffled])
    assert not torch.equal(select_tokens(x, 4, seed=1), keep)  # the seed is what varies it


def test_prune_span_keeps_actual_encoder_states_of_the_span():
    hidden = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 0] = 0  # a padded slot before the span stays where it was
    out, out_mask, kept = prune_span(hidden, mask, start=4, n=6, keep=2)
    assert out.shape == (3, 8, 8) and out_mask.shape == (3, 8) and kept.shape == (3, 2)
    assert torch.equal(out[:, :4], hidden[:, :4]) and torch.equal(out[:, 6:], hidden[:, 10:])
    for r in range(3):
        assert torch.equal(out[r, 4:6], hidden[r, 4 + kept[r]])  # the kept rows are encoder states, unchanged
        assert torch.equal(kept[r], select_tokens(hidden[r:r + 1, 4:10], 2)[0])
    assert out_mask[1, 0] == 0 and out_mask[:, 4:6].eq(1).all()
    out.sum().backward()  # gradients reach the kept states only
    grad = hidden.grad[:, 4:10].abs().sum(-1)
    assert ((grad > 0).sum(1) == 2).all()
    same, same_mask, all_kept = prune_span(hidden, mask, 4, 6, keep=6)
    assert same is hidden and torch.equal(all_kept[0], torch.arange(6))
