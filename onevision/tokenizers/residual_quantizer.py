"""Residual vector quantizer with EMA codebooks (RQ-VAE, Lee et al. 2022; OneVision eqs. 5-6).

`EMAResidualQuantizer` quantizes level by level (eq. 5): code = nearest codeword of the
residual, residual -= codeword. Codebooks are not trained by gradients but by exponential
moving averages of the residuals assigned to each code, which is stabler; a code that gets
(almost) nothing for a while is restarted on a random residual of the batch (dead-code
restart), which keeps codebooks from collapsing. The commitment loss (eq. 6, `commitment_term`
per level) pulls inputs toward their codewords; the straight-through estimator passes
gradients through. VRQ's shallow levels (`vrq.py`) and TIGER's RQ-VAE baseline (`rq_vae.py`)
both use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onevision.tokenizers.rq_kmeans import ResidualKMeans


def commitment_term(residual: torch.Tensor, codeword: torch.Tensor) -> torch.Tensor:
    """One level's term of eq. 6, ||r_l - sg(e_{c_l})||^2, averaged over the batch: the gradient
    reaches the residual (the encoder), never the codebook, which EMA updates instead."""
    return F.mse_loss(residual, codeword.detach(), reduction="sum") / len(residual)


class EMAResidualQuantizer(nn.Module):
    """L EMA codebooks applied to the residual level by level (eq. 5); `forward` also returns the
    commitment loss (eq. 6) and the straight-through partial sums f^(l) that eq. 7 compares."""

    def __init__(self, sizes: tuple[int, ...], dim: int, decay: float = 0.95, eps: float = 1e-5,
                 dead_threshold: float = 0.5):
        super().__init__()
        self.sizes, self.dim, self.decay, self.eps, self.dead_threshold = tuple(sizes), dim, decay, eps, dead_threshold
        for level, k in enumerate(sizes):
            self.register_buffer(f"codebook{level}", torch.randn(k, dim) * 0.1)
            self.register_buffer(f"cluster_size{level}", torch.ones(k))
            self.register_buffer(f"embed_sum{level}", getattr(self, f"codebook{level}").clone())
        self.restarts = 0

    def codebook(self, level: int) -> torch.Tensor:
        return getattr(self, f"codebook{level}")

    @torch.no_grad()
    def init_from(self, rq: ResidualKMeans) -> None:
        """Start from RQ-KMeans centroids (VRQ 3.1.3: 'perform RQ-KMeans first')."""
        for level, book in enumerate(rq.codebooks):
            t = torch.from_numpy(book)
            self.codebook(level).copy_(t)
            getattr(self, f"embed_sum{level}").copy_(t)
            getattr(self, f"cluster_size{level}").fill_(1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(codes (B, L), straight-through quantized x (B, d), partial sums f^(l) per level, commitment loss)."""
        residual = x
        quantized = torch.zeros_like(x)
        codes, partials = [], []
        commit = x.new_zeros(())
        for level in range(len(self.sizes)):
            book = self.codebook(level)
            idx = torch.cdist(residual.detach(), book).argmin(dim=1)
            chosen = book[idx]
            commit = commit + commitment_term(residual, chosen)
            if self.training:
                self._ema_update(level, residual.detach(), idx)
            quantized = quantized + chosen
            partials.append(x + (quantized - x).detach())  # straight-through f^(l)
            residual = residual - chosen.detach()
            codes.append(idx)
        return torch.stack(codes, 1), partials[-1], partials, commit

    @torch.no_grad()
    def _ema_update(self, level: int, residual: torch.Tensor, idx: torch.Tensor) -> None:
        k = self.sizes[level]
        onehot = F.one_hot(idx, k).to(residual.dtype)
        size = getattr(self, f"cluster_size{level}")
        esum = getattr(self, f"embed_sum{level}")
        size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        esum.mul_(self.decay).add_(onehot.T @ residual, alpha=1 - self.decay)
        n = size.sum()
        smoothed = (size + self.eps) / (n + k * self.eps) * n
        self.codebook(level).copy_(esum / smoothed.unsqueeze(1))
        dead = size < self.dead_threshold
        if dead.any():  # restart dead codes on random residuals of this batch
            pick = torch.randint(len(residual), (int(dead.sum()),), device=residual.device)
            self.codebook(level)[dead] = residual[pick]
            esum[dead] = residual[pick]
            size[dead] = 1.0
            self.restarts += int(dead.sum())

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, final residual) without EMA updates."""
        residual = x
        codes = []
        for level in range(len(self.sizes)):
            book = self.codebook(level)
            idx = torch.cdist(residual, book).argmin(dim=1)
            residual = residual - book[idx]
            codes.append(idx)
        return torch.stack(codes, 1), residual

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(self.codebook(level)[codes[:, level]]  # type: ignore[return-value]  # >= 1 level
                   for level in range(len(self.sizes)))
