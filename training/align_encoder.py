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
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from onevision.catalog.format import Catalog, catalog_fingerprint
from onevision.encoders.aligned import WEIGHTS, AlignedConfig, AlignedEfficientNet
from onevision.encoders.alignment_losses import alignment_loss
from onevision.images import load_rgb
from training.runtime import barrier, current, gather_rows, shard, sum_gradients, world


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
    """Frozen-trunk feature maps of every image, float16 on the host (N, C, h, w)."""
    out = None
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(paths), batch_size), desc="encoding trunk features", unit="batch",
                      disable=not progress):
        imgs = [load_rgb(p) for p in paths[start : start + batch_size]]
        h = model.trunk(model.preprocess(imgs).to(device)).half().cpu()
        if out is None:
            out = torch.empty((len(paths), *h.shape[1:]), dtype=torch.float16)
        out[start : start + len(h)] = h
    return out


def shared_trunk(model: AlignedEfficientNet, paths: list[Path], workdir: Path | None,
                 progress: bool = True) -> torch.Tensor:
    """`cache_trunk` of every path; in a data-parallel group each rank encodes its strided share and
    the shares meet through files in `workdir` (which every rank sees), so no image is encoded twice."""
    rank, size = world()
    if size == 1:
        return cache_trunk(model, paths, progress=progress)
    if workdir is None:
        raise ValueError("a data-parallel alignment needs a work directory every rank sees")
    workdir.mkdir(parents=True, exist_ok=True)
    mine = cache_trunk(model, paths[rank::size], progress=progress)
    save_file({"trunk": mine}, str(workdir / f"trunk-{rank}.safetensors"))
    barrier()
    out = torch.empty((len(paths), *mine.shape[1:]), dtype=torch.float16)
    for r in range(size):
        out[r::size] = load_file(str(workdir / f"trunk-{r}.safetensors"))["trunk"]
    barrier()
    (workdir / f"trunk-{rank}.safetensors").unlink()
    return out


def train_aligned_encoder(catalog: Catalog, recipe: AlignRecipe, progress: bool = True,
                          workdir: Path | None = None) -> tuple[AlignedEfficientNet, dict]:
    """Align V on `catalog`; return the model and a training log (losses, timings, and every seen
    image's embedding and token grid from the trained head). On the current runtime's device; in a
    data-parallel group (`align_task`) each rank runs the head on its share of every batch's pairs
    and the loss sees the whole batch (`gather_rows`), so its in-batch negatives are the single
    process's; `workdir` is where the ranks exchange trunk features."""
    t0 = time.perf_counter()
    device = current().torch_device
    torch.manual_seed(recipe.seed)
    model = AlignedEfficientNet.from_pretrained(recipe.encoder, recipe.seed).to(device)
    paths, groups = positive_groups(catalog)
    feats = shared_trunk(model, paths, workdir, progress=progress)
    if device.type == "cuda":
        feats = feats.pin_memory()
    cache_s = time.perf_counter() - t0
    items = np.array([i for i, g in enumerate(groups) if g])
    if len(items) < 2:
        raise ValueError(f"catalog {catalog.name} has fewer than 2 items with a second view or a train photo")
    batch = min(recipe.batch_size, len(items))
    mine = shard(np.arange(batch))  # this rank's pairs of every batch (all of them in one process)
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
        rows = [a_idx[i] for i in mine] + [b_idx[i] for i in mine]
        emb = model.head(feats[rows].to(device, non_blocking=True).float()).embedding
        a_emb, b_emb = gather_rows(emb[:len(mine)], batch), gather_rows(emb[len(mine):], batch)
        loss = alignment_loss(a_emb, b_emb, recipe.lambda_cl, recipe.lambda_circle, recipe.tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sum_gradients(params)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    embeddings, tokens = head_outputs(model, feats) if world()[0] == 0 else (None, None)
    log = {"losses": losses, "n_images": len(paths), "n_items_with_pairs": int(len(items)),
           "cache_seconds": round(cache_s, 1), "seconds": round(time.perf_counter() - t0, 1),
           "paths": paths, "embeddings": embeddings, "tokens": tokens}
    return model, log


@torch.inference_mode()
def head_outputs(model: AlignedEfficientNet, feats: torch.Tensor,
                 batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The trained head over the cached trunk features: every image's embedding (float32) and token
    grid (float16), so later steps (the tokenizer's features, the generator's image bank) reuse them
    instead of running V over the same images again."""
    embs, toks = [], []
    device = next(model.parameters()).device
    for s in range(0, len(feats), batch_size):
        out = model.head(feats[s : s + batch_size].to(device).float())
        embs.append(out.embedding.cpu().numpy().astype(np.float32))
        toks.append(out.tokens.cpu().numpy().astype(np.float16))
    return np.concatenate(embs), np.ascontiguousarray(np.concatenate(toks))


def publish_encoder(model: AlignedEfficientNet, recipe: AlignRecipe, catalog: Catalog, log: dict,
                    registry: str | Path, work: Path) -> Path:
    """Store the aligned encoder as a new version of `encoder-<catalog>` in the registry."""
    from onevision.registry import publish

    files = model.save(work)
    config = {"kind": "aligned-efficientnet", "encoder": asdict(recipe.encoder),
              "recipe": {k: v for k, v in asdict(recipe).items() if k != "encoder"}, "catalog": catalog.name,
              "catalog_fingerprint": catalog_fingerprint(catalog)}
    metrics = {"final_loss": float(np.mean(log["losses"][-20:])), "train_seconds": log["seconds"]}
    if log.get("distributed"):
        metrics["distributed"] = log["distributed"]
    return publish(registry, f"encoder-{catalog.name}", files, config, metrics)


OUTPUTS, LOG = "outputs.safetensors", "log.json"  # what rank 0 leaves in the work directory


def align_task(args: dict) -> None:
    """A Ray Train worker's part of `encoder align --workers N` (`training.distributed`): the same
    recipe on this rank; rank 0 leaves the weights, the head's outputs and the log in the work directory."""
    import json

    from onevision.catalog.format import load_catalog
    from training.distributed import ray_storage, record_weights

    workdir = Path(args["workdir"])
    recipe = AlignRecipe(**{**args["recipe"], "encoder": AlignedConfig(**args["recipe"]["encoder"])})
    model, log = train_aligned_encoder(load_catalog(args["catalog"]), recipe, progress=current().progress,
                                       workdir=workdir)
    if world()[0] == 0:
        model.cpu().save(workdir)
        save_file({"embeddings": torch.from_numpy(log["embeddings"]), "tokens": torch.from_numpy(log["tokens"])},
                  str(workdir / OUTPUTS))
        (workdir / LOG).write_text(json.dumps({k: v for k, v in log.items()
                                               if k not in ("paths", "embeddings", "tokens")}))
    record_weights(model, ray_storage(workdir) / "ranks")


def align_on_ray(catalog: Catalog, recipe: AlignRecipe, parallel, workdir: Path) -> tuple[AlignedEfficientNet, dict]:
    """`train_aligned_encoder` on `parallel.workers` Ray Train workers (`training.distributed`),
    checked for identical weights on every rank; returns what the single process returns, plus
    what the manifest records of the run under "distributed"."""
    import json

    from training.distributed import train_on_ray

    workdir = Path(workdir).resolve()
    args = {"catalog": str(catalog.root.resolve()), "recipe": asdict(recipe), "workdir": str(workdir)}
    distributed = train_on_ray("training.align_encoder:align_task", args, parallel, workdir, "align")
    model = AlignedEfficientNet(recipe.encoder)
    model.load_state_dict(load_file(str(workdir / WEIGHTS)))
    outputs = load_file(str(workdir / OUTPUTS))
    log = {**json.loads((workdir / LOG).read_text()), "paths": positive_groups(catalog)[0],
           "embeddings": outputs["embeddings"].numpy(), "tokens": outputs["tokens"].numpy(),
           "distributed": distributed}
    return model.eval(), log
