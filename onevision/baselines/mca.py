"""The multi-stage cascade (MCA) baseline of OneVision Tables 1, 2 and 5.

1. Recall: exact faiss inner-product search of V's query embedding over the catalog (a few
   hundred candidates).
2. Pre-rank: a cheap score, ANN similarity plus a small popularity prior, keeps the top few
   dozen.
3. Rank: a learned ranker (a small MLP, trained list-wise with softmax cross-entropy on the
   train-split photos) over features of the query, the item's 30-day stats and the user's
   short- and long-term behaviour at request time.

"MCA w/o ranking" stops after the pre-rank. Features are plain arrays, so serving can run the
same cascade from Feast rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onevision.ann import ItemIndex
from onevision.items import log1p_known

STAT_COLUMNS = ("clicks_30d", "orders_30d", "gmv_30d")
# a published cascade (training/mca.py -> registry `mca-<catalog>`): the fitted ranker and its
# feature scaling, and V's embedding of each catalog item (catalog order)
RANKER_FILE, ITEM_EMBEDDING_FILE = "ranker.safetensors", "item_embedding.safetensors"


def registry_name(catalog_name: str) -> str:
    return f"mca-{catalog_name}"


def item_stats(items) -> np.ndarray:
    """(N, 3) clicks_30d, orders_30d, gmv_30d of a catalog's items (missing columns count as zero)."""
    return np.stack([items[c].to_numpy(np.float64) if c in items.columns else np.zeros(len(items))
                     for c in STAT_COLUMNS], 1)


FEATURES = ("ann_sim", "recall_rank", "log_clicks", "log_orders", "log_gmv", "log_price", "short_max_sim",
            "long_sim", "has_history", "price_gap", "seen")


@dataclass(frozen=True)
class MCAConfig:
    recall: int = 300
    prerank: int = 50
    popularity_weight: float = 0.02  # pre-rank = ANN similarity + w * log1p(orders_30d)
    hidden: int = 32
    epochs: int = 30
    lr: float = 3e-3
    seed: int = 0


@dataclass
class UserArrays:
    """Per-request user behaviour as item rows: short-term (B, 5) and long-term lists, -1 = none."""

    short_items: np.ndarray
    long_items: list[np.ndarray]

    def take(self, rows: np.ndarray) -> "UserArrays":
        return UserArrays(self.short_items[rows], [self.long_items[r] for r in rows])


class MCACascade:
    def __init__(self, item_embedding: np.ndarray, item_stats: np.ndarray, price: np.ndarray,
                 config: MCAConfig = MCAConfig()):
        """item_stats: (N, 3) clicks_30d, orders_30d, gmv_30d."""
        self.index = ItemIndex(item_embedding)  # the recall's, built once per catalog version
        self.emb = self.index.vectors  # its stored vectors: the one copy (float16 beyond the exact size)
        self.stats = log1p_known(item_stats).astype(np.float32)
        self.log_price = log1p_known(price).astype(np.float32)
        self.cfg = config
        torch.manual_seed(config.seed)
        self.ranker = nn.Sequential(nn.Linear(len(FEATURES), config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1))
        self.mean = np.zeros(len(FEATURES), np.float32)
        self.std = np.ones(len(FEATURES), np.float32)

    @classmethod
    def for_items(cls, items, item_embedding: np.ndarray, config: MCAConfig = MCAConfig()) -> "MCACascade":
        """The cascade over a catalog's items (their stats and prices) and V's item embeddings."""
        return cls(item_embedding, item_stats(items), items["price"].to_numpy(), config)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted ranker and feature scaling, for safetensors."""
        out = {f"ranker.{k}": v.detach().numpy().copy() for k, v in self.ranker.state_dict().items()}
        return {**out, "mean": np.asarray(self.mean, np.float32), "std": np.asarray(self.std, np.float32)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> "MCACascade":
        self.ranker.load_state_dict({k[len("ranker."):]: torch.from_numpy(v) for k, v in arrays.items()
                                     if k.startswith("ranker.")})
        self.mean, self.std = arrays["mean"], arrays["std"]
        return self

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """Item embeddings as float32, whatever the index stores."""
        return self.emb[rows].astype(np.float32, copy=False)

    def prerank(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidates (B, P), their ANN similarity) after recall and pre-rank."""
        rec = self.index.search(query, self.cfg.recall)[1]
        sim = np.einsum("bd,bkd->bk", query, self._rows(rec))
        pre = sim + self.cfg.popularity_weight * self.stats[rec, 1]
        keep = np.argsort(-pre, axis=1, kind="stable")[:, : self.cfg.prerank]
        return np.take_along_axis(rec, keep, 1), np.take_along_axis(sim, keep, 1)

    def features(self, query: np.ndarray, cands: np.ndarray, sim: np.ndarray, users: UserArrays) -> np.ndarray:
        b, p = cands.shape
        f = np.zeros((b, p, len(FEATURES)), np.float32)
        f[..., 0] = sim
        f[..., 1] = np.arange(p)[None] / p
        f[..., 2:5] = self.stats[cands]
        f[..., 5] = self.log_price[cands]
        ce = self._rows(cands)  # (B, P, D)
        for r in range(b):
            short = users.short_items[r][users.short_items[r] >= 0]
            long = users.long_items[r]
            if len(short):
                f[r, :, 6] = (ce[r] @ self._rows(short).T).max(1)
            if len(long):
                centre = self._rows(long).mean(0)
                f[r, :, 7] = ce[r] @ (centre / max(np.linalg.norm(centre), 1e-6))
                f[r, :, 9] = np.abs(self.log_price[cands[r]] - self.log_price[long].mean())
                f[r, :, 10] = np.isin(cands[r], np.concatenate([short, long]))
            f[r, :, 8] = float(len(short) + len(long) > 0)
        return f

    def _scores(self, feats: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy((feats - self.mean) / self.std)
        return self.ranker(x).squeeze(-1)

    def candidates(self, query: np.ndarray, users: UserArrays, as_of=None,
                   ts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(candidates (B, P), their ranker features) after recall and pre-rank; with `as_of`
        (`onevision.catalog.item_stats.ItemStatsAsOf`) and request times `ts`, each request reads
        the item stats known at its time (requests grouped by snapshot)."""
        if as_of is None or ts is None or len(query) == 0:
            cands, sim = self.prerank(query)
            return cands, self.features(query, cands, sim, users)

        def at_snapshot(rows: np.ndarray, snapshot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            self.stats = log1p_known(snapshot).astype(np.float32)
            c, s = self.prerank(query[rows])
            return c, self.features(query[rows], c, s, users.take(rows))

        own = self.stats
        try:
            cands, feats = as_of.per_snapshot(ts, at_snapshot)
        finally:
            self.stats = own
        return cands, feats

    def fit(self, query: np.ndarray, users: UserArrays, targets: np.ndarray, as_of=None,
            ts: np.ndarray | None = None) -> dict:
        """Train the ranker on requests whose target survives recall and pre-rank (item stats as
        of each request's time when given, see `candidates`)."""
        cands, feats = self.candidates(query, users, as_of, ts)
        hit = cands == targets[:, None]
        keep = hit.any(1)
        feats, label = feats[keep], hit[keep].argmax(1)
        flat = feats.reshape(-1, feats.shape[-1])
        self.mean, self.std = flat.mean(0), flat.std(0) + 1e-6
        opt = torch.optim.Adam(self.ranker.parameters(), lr=self.cfg.lr)
        y = torch.from_numpy(label)
        rng = np.random.default_rng(self.cfg.seed)
        losses = []
        for _ in range(self.cfg.epochs):
            for idx in np.array_split(rng.permutation(len(feats)), max(1, len(feats) // 256)):
                loss = nn.functional.cross_entropy(self._scores(feats[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        return {"trained_on": int(keep.sum()), "recall_hit_share": float(keep.mean()),
                "final_loss": float(np.mean(losses[-20:]))}

    @torch.no_grad()
    def rank(self, query: np.ndarray, users: UserArrays | None, k: int = 10, ranking: bool = True, as_of=None,
             ts: np.ndarray | None = None) -> np.ndarray:
        """(B, k) item rows: the full cascade, or recall + pre-rank only when not `ranking` (item
        stats as of each request's time when given, see `candidates`)."""
        if users is None:
            users = UserArrays(np.full((len(query), 5), -1), [np.zeros(0, np.int64)] * len(query))
        cands, feats = self.candidates(query, users, as_of, ts)
        if not ranking:
            return cands[:, :k]
        scores = self._scores(feats).numpy()
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cands, order, 1)


def load_mca(version: Path, items) -> tuple[MCACascade, dict]:
    """A published `mca-<catalog>` (training/mca.py) over `items`, the catalog it was fitted on:
    the cascade with its fitted ranker, and the version's manifest."""
    from safetensors.numpy import load_file

    from onevision.registry import load_version

    manifest, config = load_version(version)
    embedding = load_file(str(Path(version) / ITEM_EMBEDDING_FILE))["embedding"]
    if len(embedding) != len(items):
        raise ValueError(f"{version} was fitted on {len(embedding)} items, the catalog has {len(items)}")
    mca = MCACascade.for_items(items, embedding, MCAConfig(**config["mca"]))
    mca.load_arrays(load_file(str(Path(version) / RANKER_FILE)))
    return mca, manifest
