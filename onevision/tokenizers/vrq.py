"""VRQ: vision-aligned residual quantization (OneVision 3.1.3).

1. Fusion (eq. 2): v = E_v(x) from the image embedding, t = E_t(y) from the category text
   embedding, f = (1 - alpha) v + alpha t + f_cat, alpha = sigmoid(MLP([v, t])), f_cat = MLP([v, t]).
2. Shallow levels: an EMA residual quantizer over f, its codebooks initialised by RQ-KMeans on
   the warmed-up fused features, trained on multi-view pairs with eq. 8 (consistency, margin,
   commitment, hierarchical consistency).
3. Deep levels: the residual left after the shallow levels, concatenated with the item's
   standardised business features (clicks, orders, GMV, price), quantized by OPQ + PQ. This is
   what separates visually identical items (price-only variants).

Queries and extra views carry the business features of nothing (zeros = the catalog mean),
so their deep codes follow their pixels alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from onevision.tokenizers.base import PairData, Tokenizer, TokenizerError, TokenizerInputs, expect, load_module
from onevision.tokenizers.opq import OPQLevels
from onevision.tokenizers.residual_quantizer import EMAResidualQuantizer
from onevision.tokenizers.rq_kmeans import ResidualKMeans
from onevision.tokenizers.vrq_losses import consistency_loss, hierarchical_consistency_loss, margin_loss, vrq_loss


class Fusion(nn.Module):
    """Eq. 2: modality encoders and a learned fusion weight."""

    def __init__(self, d_visual: int, d_text: int, dim: int, hidden: int = 256):
        super().__init__()
        self.e_v = nn.Sequential(nn.Linear(d_visual, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.e_t = nn.Sequential(nn.Linear(d_text, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.f_cat = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.alpha = nn.Sequential(nn.Linear(2 * dim, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fused f, visual latent v, alpha), f and v unit length."""
        v, t = self.e_v(x), self.e_t(y)
        vt = torch.cat([v, t], dim=1)
        alpha = torch.sigmoid(self.alpha(vt))
        f = (1 - alpha) * v + alpha * t + self.f_cat(vt)
        return F.normalize(f, dim=1), F.normalize(v, dim=1), alpha


@dataclass
class VRQTraining:
    dim: int = 128
    warmup_steps: int = 300
    steps: int = 2500
    batch_size: int = 256
    lr: float = 1e-3
    tau: float = 0.07
    gamma: float = 0.2
    hc_temperature: float = 0.02
    betas: tuple[float, float, float, float] = (1.0, 0.5, 0.25, 0.5)
    ema_decay: float = 0.95
    business_weight: float = 0.5  # scale of standardised business features next to the residual
    shallow_levels: int = 3


class VRQTokenizer(Tokenizer):
    method = "vrq"

    def __init__(self, sizes: tuple[int, ...], seed: int = 0, training: VRQTraining | None = None):
        super().__init__(sizes, seed)
        self.training = training or VRQTraining()
        n = self.training.shallow_levels
        if len(self.sizes) < n:
            raise TokenizerError(f"VRQ needs at least {n} levels, got sizes {self.sizes}")
        if len(self.sizes) > n and len(set(self.sizes[n:])) != 1:
            raise TokenizerError(f"VRQ's OPQ levels share one size, got {self.sizes[n:]}")

    @property
    def shallow(self) -> tuple[int, ...]:
        return self.sizes[: self.training.shallow_levels]

    @property
    def deep(self) -> tuple[int, ...]:
        return self.sizes[self.training.shallow_levels :]

    def _build(self, d_visual: int, d_text: int, n_business: int) -> None:
        torch.manual_seed(self.seed)
        self.d_visual, self.d_text, self.n_business = d_visual, d_text, n_business
        self.fusion = Fusion(d_visual, d_text, self.training.dim)
        self.rq = EMAResidualQuantizer(self.shallow, self.training.dim, decay=self.training.ema_decay)
        self.business_mean = np.zeros(n_business, np.float32)
        self.business_std = np.ones(n_business, np.float32)

    def _fuse(self, x: TokenizerInputs) -> torch.Tensor:
        with torch.no_grad():
            return self.fusion(torch.from_numpy(x.visual.astype(np.float32)),
                               torch.from_numpy(x.text.astype(np.float32)))[0]

    def fit(self, items: TokenizerInputs, pairs: PairData | None = None, progress: bool = True) -> dict:
        if pairs is None or len(pairs.item) == 0:
            raise ValueError("VRQ trains on multi-view pairs: "
                             "the catalog needs other views or train photos of its items")
        cfg = self.training
        self._build(items.visual.shape[1], items.text.shape[1], items.business.shape[1])
        xv, xt = torch.from_numpy(items.visual.astype(np.float32)), torch.from_numpy(items.text.astype(np.float32))
        pv = torch.from_numpy(pairs.inputs.visual.astype(np.float32))
        pt = torch.from_numpy(items.text[pairs.item].astype(np.float32))  # a view has its item's category
        pair_item = torch.from_numpy(pairs.item.astype(np.int64))
        opt = torch.optim.Adam(self.fusion.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(self.seed)
        log: dict[str, list[float]] = {k: [] for k in ("cons", "mar", "commit", "hc", "total")}
        bar = tqdm(range(cfg.warmup_steps + cfg.steps), desc="training VRQ", unit="step", disable=not progress)
        for step in bar:
            if step == cfg.warmup_steps:  # codebooks start from RQ-KMeans on the warmed-up fusion
                self.rq.init_from(ResidualKMeans.fit(self._fuse(items).numpy(), self.shallow, self.seed))
                self.rq.train()
            pick = torch.randint(len(pair_item), (min(cfg.batch_size, len(pair_item)),), generator=gen)
            item = pair_item[pick]
            keep = _first_per_item(item)  # one pair per item: no false negatives inside a batch
            pick, item = pick[keep], item[keep]
            f1, v1, _ = self.fusion(xv[item], xt[item])
            f2, _, _ = self.fusion(pv[pick], pt[pick])
            cons = consistency_loss(f1, f2, v1, cfg.tau)
            mar = margin_loss(f1, f2, v1, cfg.gamma)
            commit = hc = f1.new_zeros(())
            if step >= cfg.warmup_steps:
                codes1, _, _, c1 = self.rq(f1)
                codes2, _, _, c2 = self.rq(f2)
                books = [self.rq.codebook(level) for level in range(len(self.shallow))]
                hc = hierarchical_consistency_loss(f1, f2, codes1, codes2, books, cfg.hc_temperature)
                commit = c1 + c2
            loss = vrq_loss(cons, mar, commit, hc, cfg.betas)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k, v in zip(log, (cons, mar, commit, hc, loss)):
                log[k].append(float(v.detach()))
            bar.set_postfix(loss=f"{np.mean(log['total'][-20:]):.3f}")
        self.rq.eval()
        self.fusion.eval()
        raw = items.business.astype(np.float32)
        self.business_mean, self.business_std = raw.mean(0), raw.std(0) + 1e-6
        if self.deep:
            _, residual = self.rq.encode(self._fuse(items))
            self.opq = OPQLevels.fit(self._deep_input(residual.numpy(), items.business), len(self.deep), self.deep[0],
                                     self.seed)
        return {**log, "restarts": self.rq.restarts}

    def _deep_input(self, residual: np.ndarray, business: np.ndarray) -> np.ndarray:
        b = (business.astype(np.float32) - self.business_mean) / self.business_std
        return np.concatenate([residual,
                               self.training.business_weight * b * (np.abs(business).sum(1, keepdims=True) > 0)], 1)

    def _shallow(self, x: TokenizerInputs) -> tuple[np.ndarray, np.ndarray]:
        codes, residual = self.rq.encode(self._fuse(x))
        return codes.numpy(), residual.numpy()

    def encode(self, x: TokenizerInputs) -> np.ndarray:
        codes, residual = self._shallow(x)
        if not self.deep:
            return codes
        return np.concatenate([codes, self.opq.encode(self._deep_input(residual, x.business))], 1)

    def quantized(self, x: TokenizerInputs) -> np.ndarray:
        codes = self.encode(x)
        shallow = self.rq.decode(torch.from_numpy(codes[:, : len(self.shallow)])).numpy()
        if not self.deep:
            return shallow.astype(np.float32)
        deep = self.opq.decode(codes[:, len(self.shallow) :])[:, : self.training.dim]  # the residual part
        return (shallow + deep).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"fusion.{k}": v.numpy() for k, v in self.fusion.state_dict().items()}
        out.update({f"rq.codebook{level}": self.rq.codebook(level).numpy() for level in range(len(self.shallow))})
        out.update({"business.mean": self.business_mean, "business.std": self.business_std})
        if self.deep:
            out.update(self.opq.state("opq"))
        return out

    def config(self) -> dict:
        return {**super().config(), "training": asdict(self.training), "d_visual": self.d_visual,
                "d_text": self.d_text, "n_business": self.n_business}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "VRQTokenizer":
        training = VRQTraining(**{**config["training"], "betas": tuple(config["training"]["betas"])})
        tok = cls(tuple(config["sizes"]), config.get("seed", 0), training)
        tok._build(config["d_visual"], config["d_text"], config["n_business"])
        load_module(tok.fusion, state, "fusion")
        for level, k in enumerate(tok.shallow):
            tok.rq.codebook(level).copy_(torch.from_numpy(expect(state, f"rq.codebook{level}", (k, training.dim))))
        tok.business_mean = expect(state, "business.mean", (tok.n_business,))
        tok.business_std = expect(state, "business.std", (tok.n_business,))
        if tok.deep:
            tok.opq = OPQLevels.from_state(state, "opq", training.dim + tok.n_business, len(tok.deep), tok.deep[0])
        tok.fusion.eval()
        tok.rq.eval()
        return tok


def _first_per_item(item: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each item in a batch."""
    order = torch.argsort(item, stable=True)
    first = torch.ones_like(item, dtype=torch.bool)
    first[order[1:]] = item[order[1:]] != item[order[:-1]]
    return torch.nonzero(first).squeeze(1)
