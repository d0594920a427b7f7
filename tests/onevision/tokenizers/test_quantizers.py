"""The quantizers on synthetic clustered data: codes in range, reconstructions, EMA and restarts."""

import numpy as np
import pytest
import torch

from onevision.tokenizers.opq import OPQLevels
from onevision.tokenizers.residual_quantizer import EMAResidualQuantizer
from onevision.tokenizers.rq_kmeans import ResidualKMeans


def _clusters(n=600, d=16, k=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    return (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


def test_residual_kmeans_codes_reconstruct_and_shrink_the_residual():
    x = _clusters()
    rq = ResidualKMeans.fit(x, (12, 8, 4), seed=0)
    codes, residual = rq.encode(x)
    assert codes.shape == (600, 3) and (codes.max(0) < [12, 8, 4]).all() and codes.min() >= 0
    assert np.allclose(rq.decode(codes) + residual, x, atol=1e-4)
    assert (residual**2).sum(1).mean() < 0.1 * (x**2).sum(1).mean()
    assert len(np.unique(codes[:, 0])) == 12  # the 12 clusters each get a level-1 code


def test_residual_kmeans_refuses_too_few_points():
    with pytest.raises(ValueError, match="needs at least 64 points"):
        ResidualKMeans.fit(_clusters(n=20), (64,))


def test_opq_levels_codes_and_reconstruction():
    x = _clusters(d=12)
    opq = OPQLevels.fit(x, levels=2, size=16, seed=0)
    codes = opq.encode(x)
    assert codes.shape == (600, 2) and codes.max() < 16
    err = ((opq.decode(codes) - x) ** 2).sum(1).mean()
    assert err < 0.5 * ((x - x.mean(0)) ** 2).sum(1).mean()
    assert opq.rotation.shape == (12, 12)
    with pytest.raises(ValueError, match="power of two"):
        OPQLevels.fit(x, levels=2, size=12)
    with pytest.raises(ValueError, match="need at least 16 points"):
        OPQLevels.fit(x[:10], levels=2, size=16)


def test_ema_quantizer_exact_codewords_ema_moves_and_dead_codes_restart():
    torch.manual_seed(0)
    q = EMAResidualQuantizer((4, 4), dim=3, decay=0.5, dead_threshold=0.5)
    book0 = q.codebook(0).clone()
    codes, resid = q.encode(book0)
    assert codes[:, 0].tolist() == [0, 1, 2, 3]
    assert torch.allclose(resid, -q.codebook(1)[codes[:, 1]])  # level 1 is exact, level 2 quantizes zero
    q.train()
    target = book0[0] + 1.0
    before = torch.dist(q.codebook(0)[0], target)
    batch = target.repeat(64, 1)
    for _ in range(6):
        _, out, partials, commit = q(batch)
    assert torch.dist(q.codebook(0)[0], target) < before  # codeword 0 moved toward its residuals
    assert q.restarts > 0  # the codes that got nothing were restarted
    assert len(partials) == 2 and commit.item() >= 0 and out.shape == batch.shape


def test_commitment_loss_known_value():
    q = EMAResidualQuantizer((2,), dim=2)
    q.codebook(0).copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    q.eval()
    on = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert q(on)[3].item() == pytest.approx(0.0)
    off = on + torch.tensor([0.0, 0.5])  # each input 0.5 away from its codeword
    assert q(off)[3].item() == pytest.approx(0.25)  # eq. 6: mean over the batch of ||r - sg(e)||^2


def test_opq_with_fewer_points_than_dimensions_falls_back_to_plain_pq():
    x = _clusters(n=40, d=64)  # faiss aborts the process when asked to learn this rotation
    opq = OPQLevels.fit(x, levels=2, size=4, seed=0)
    assert np.array_equal(opq.rotation, np.eye(64, dtype=np.float32))
    assert opq.encode(x).shape == (40, 2)
