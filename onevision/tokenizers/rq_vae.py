"""TIGER's RQ-VAE baseline (`rqvae` in Table 4): MLP encoder, the EMA residual quantizer of
`residual_quantizer.py` (eqs. 5-6), MLP decoder, trained with reconstruction + commitment only
(no contrastive terms) on the visual embedding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from onevision.tokenizers.base import PairData, Tokenizer, TokenizerInputs, expect, load_module
from onevision.tokenizers.residual_quantizer import EMAResidualQuantizer
from onevision.tokenizers.rq_kmeans import ResidualKMeans


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
        out.update({f"rq.codebook{level}": self.rq.codebook(level).numpy() for level in range(self.levels)})
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

