"""Residual vector quantizer with EMA codebooks (RQ-VAE, Lee et al. 2022), plus the TIGER baseline.

`EMAResidualQuantizer` quantizes level by level (eq. 5): code = nearest codeword of the
residual, residual -= codeword. Codebooks are not trained by gradients but by exponential
moving averages of the residuals assigned to each code, which is stabler; a code that gets
(almost) nothing for a while is restarted on a random residual of the batch (dead-code
restart), which keeps codebooks from collapsing. The commitment loss (eq. 6) pulls inputs
toward their codewords; the straight-through estimator passes gradients through.

`RQVAETokenizer` is TIGER's RQ-VAE: MLP encoder, this quantizer, MLP decoder, trained with
reconstruction + commitment only (no contrastive terms) on the visual embedding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from onevision.tokenizers.base import PairData, Tokenizer, TokenizerInputs, expect
from onevision.tokenizers.rq_kmeans import ResidualKMeans


class EMAResidualQuantizer(nn.Module):
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
            commit = commit + F.mse_loss(residual, chosen.detach(), reduction="sum") / len(x)
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
        return sum(self.codebook(level)[codes[:, level]] for level in range(len(self.sizes)))


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class RQVAETokenizer(Tokenizer):
    """TIGER's RQ-VAE baseline: reconstruction + commitment, no contrastive or category terms."""

    method = "rqvae"

    def __init__(self, sizes: tuple[int, ...], seed: int = 0, latent: int = 64, steps: int = 1500,
                 batch_size: int = 512, lr: float = 1e-3, beta_commit: float = 0.25):
        super().__init__(sizes, seed)
        self.latent, self.steps, self.batch_size, self.lr, self.beta_commit = latent, steps, batch_size, lr, beta_commit

    def _build(self, dim: int) -> None:
        torch.manual_seed(self.seed)
        self.dim = dim
        self.encoder = _mlp(dim, 256, self.latent)
        self.decoder = _mlp(self.latent, 256, dim)
        self.rq = EMAResidualQuantizer(self.sizes, self.latent)

    def fit(self, items: TokenizerInputs, pairs: PairData | None = None, progress: bool = True) -> dict:
        self._build(items.visual.shape[1])
        x = torch.from_numpy(items.visual.astype(np.float32))
        with torch.no_grad():
            self.rq.init_from(ResidualKMeans.fit(self.encoder(x).numpy(), self.sizes, self.seed))
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        losses = []
        self.rq.train()
        for _ in tqdm(range(self.steps), desc="training RQ-VAE (TIGER)", unit="step", disable=not progress):
            batch = x[torch.randint(len(x), (min(self.batch_size, len(x)),), generator=gen)]
            _, q, _, commit = self.rq(self.encoder(batch))
            loss = F.mse_loss(self.decoder(q), batch) + self.beta_commit * commit
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        self.rq.eval()
        return {"losses": losses, "restarts": self.rq.restarts}

    @torch.no_grad()
    def encode(self, x: TokenizerInputs) -> np.ndarray:
        return self.rq.encode(self.encoder(torch.from_numpy(x.visual.astype(np.float32))))[0].numpy()

    @torch.no_grad()
    def quantized(self, x: TokenizerInputs) -> np.ndarray:
        return self.rq.decode(torch.from_numpy(self.encode(x))).numpy().astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"encoder.{k}": v.numpy() for k, v in self.encoder.state_dict().items()}
        out.update({f"decoder.{k}": v.numpy() for k, v in self.decoder.state_dict().items()})
        out.update({f"rq.codebook{l}": self.rq.codebook(l).numpy() for l in range(self.levels)})
        return out

    def config(self) -> dict:
        return {**super().config(), "dim": self.dim, "latent": self.latent}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "RQVAETokenizer":
        tok = cls(tuple(config["sizes"]), config.get("seed", 0), latent=config["latent"])
        tok._build(config["dim"])
        load_module(tok.encoder, state, "encoder")
        load_module(tok.decoder, state, "decoder")
        for level, k in enumerate(tok.sizes):
            tok.rq.codebook(level).copy_(torch.from_numpy(expect(state, f"rq.codebook{level}", (k, tok.latent))))
        tok.rq.eval()
        return tok


def load_module(module: nn.Module, state: dict[str, np.ndarray], prefix: str) -> None:
    """Load `prefix.*` arrays into a module, checking every shape first."""
    own = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(expect(state, f"{prefix}.{k}", tuple(v.shape))) for k, v in own.items()})
