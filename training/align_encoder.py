"""Recipe: align the image encoder V on multi-view positive pairs (OneVision 3.1.1, eq. 1).

Positives of an item: its catalog view, its other views, and the train-split shopper photos
that led to it (query -> item pairs; in the synthetic world a quarter of those photos show a
near-identical sibling, which is the paper's item <-> near-identical item pair). Validation
and test photos are never used. The frozen trunk runs once per image (cached in float16);
each step then trains the head on a batch of pairs, other pairs serving as negatives.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from onevision.catalog.format import Catalog, catalog_fingerprint
from onevision.encoders.aligned import AlignedConfig, AlignedEfficientNet
from onevision.encoders.alignment_losses import alignment_loss
from onevision.images import load_rgb


@dataclass
class AlignRecipe:
    steps: int = 300
    batch_size: int = 96
    lr: float = 3e-4
    weight_decay: float = 1e-4
    tau: float = 0.05
    lambda_cl: float = 1.0
    lambda_circle: float = 0.1
    catalog_anchor_share: float = 0.7  # how often the anchor of a pair is the catalog view
    seed: int = 0
    encoder: AlignedConfig = field(default_factory=AlignedConfig)


def positive_groups(catalog: Catalog) -> tuple[list[Path], list[list[int]]]:
    """Image paths (catalog views first, index = item index) and each item's other images."""
    paths = [catalog.path(p) for p in catalog.items["image"]]
    groups: list[list[int]] = [[] for _ in range(len(paths))]
    if "views" in catalog.items.columns:
        for item, views in enumerate(catalog.items["views"]):
            for v in views if views is not None else ():
                groups[item].append(len(paths))
                paths.append(catalog.path(v))
    index_of = {item_id: k for k, item_id in enumerate(catalog.items["item_id"])}
    train = catalog.queries[catalog.queries["split"] == "train"]
    for image, target in zip(train["image"], train["target_item_id"]):
        groups[index_of[target]].append(len(paths))
        paths.append(catalog.path(image))
    return paths, groups


@torch.inference_mode()
def cache_trunk(model: AlignedEfficientNet, paths: list[Path], batch_size: int = 64,
                progress: bool = True) -> torch.Tensor:
    """Frozen-trunk feature maps of every image, float16 (N, C, h, w)."""
    out = None
    for start in tqdm(range(0, len(paths), batch_size), desc="encoding trunk features", unit="batch",
                      disable=not progress):
        imgs = [load_rgb(p) for p in paths[start : start + batch_size]]
        h = model.trunk(model.preprocess(imgs)).half()
        if out is None:
            out = torch.empty((len(paths), *h.shape[1:]), dtype=torch.float16)
        out[start : start + len(h)] = h
    return out


def train_aligned_encoder(catalog: Catalog, recipe: AlignRecipe,
                          progress: bool = True) -> tuple[AlignedEfficientNet, dict]:
    """Align V on `catalog`; return the model and a training log (losses, timings)."""
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    model = AlignedEfficientNet.from_pretrained(recipe.encoder, recipe.seed)
    paths, groups = positive_groups(catalog)
    feats = cache_trunk(model, paths, progress=progress)
    cache_s = time.perf_counter() - t0
    items = np.array([i for i, g in enumerate(groups) if g])
    if len(items) < 2:
        raise ValueError(f"catalog {catalog.name} has fewer than 2 items with a second view or a train photo")
    batch = min(recipe.batch_size, len(items))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.steps)
    rng = np.random.default_rng(recipe.seed)
    model.train()
    losses = []
    bar = tqdm(range(recipe.steps), desc="aligning encoder", unit="step", disable=not progress)
    for _ in bar:
        chosen = rng.choice(items, batch, replace=False)
        a_idx, b_idx = [], []
        for item in chosen:
            pool = [int(item)] + groups[item]  # the catalog view and the other images
            if rng.random() < recipe.catalog_anchor_share:
                a, b = int(item), groups[item][int(rng.integers(len(groups[item])))]
            else:
                a, b = (pool[k] for k in rng.choice(len(pool), 2, replace=False))
            a_idx.append(a)
            b_idx.append(b)
        emb = model.head(feats[a_idx + b_idx].float()).embedding
        loss = alignment_loss(emb[:batch], emb[batch:], recipe.lambda_cl, recipe.lambda_circle, recipe.tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    with torch.inference_mode():  # embeddings of every image seen, reused by later steps
        embeddings = np.concatenate([model.head(feats[s : s + 256].float()).embedding.numpy()
                                     for s in range(0, len(feats), 256)])
    log = {"losses": losses, "n_images": len(paths), "n_items_with_pairs": int(len(items)),
           "cache_seconds": round(cache_s, 1), "seconds": round(time.perf_counter() - t0, 1),
           "embeddings": embeddings}
    return model, log


def publish_encoder(model: AlignedEfficientNet, recipe: AlignRecipe, catalog: Catalog, log: dict,
                    registry: str | Path, work: Path) -> Path:
    """Store the aligned encoder as a new version of `encoder-<catalog>` in the registry."""
    from onevision.registry import publish

    files = model.save(work)
    config = {"kind": "aligned-efficientnet", "encoder": asdict(recipe.encoder),
              "recipe": {k: v for k, v in asdict(recipe).items() if k != "encoder"}, "catalog": catalog.name,
              "catalog_fingerprint": catalog_fingerprint(catalog)}
    metrics = {"final_loss": float(np.mean(log["losses"][-20:])), "train_seconds": log["seconds"]}
    return publish(registry, f"encoder-{catalog.name}", files, config, metrics)
