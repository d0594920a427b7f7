"""Recipe `train mca`: fit the cascade baseline (OneVision's MCA) and publish it for serving.

ANN recall and pre-rank need no training; the ranker is fitted list-wise on the train split's
shopper photos with the user features at request time, exactly as the offline evaluation fits
it (`fit_mca` is shared). Published as `mca-<catalog>`: the ranker and its feature scaling and V's
item embeddings (catalog order) in safetensors, the config (cascade sizes, the tokenizer whose encoder V embeds photos and items),
the fit's figures and a confidence threshold for the low-confidence flag.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from onevision.baselines.mca import MCACascade, MCAConfig, UserArrays
from onevision.catalog.format import Catalog
from onevision.generator.retrieve import calibrate_threshold
from onevision.registry import publish

STAT_COLUMNS = ("clicks_30d", "orders_30d", "gmv_30d")
RANKER, ITEM_EMBEDDING = "ranker.safetensors", "item_embedding.safetensors"


def item_stats(items) -> np.ndarray:
    """(N, 3) clicks_30d, orders_30d, gmv_30d (missing columns count as zero)."""
    return np.stack([items[c].to_numpy(np.float64) if c in items.columns else np.zeros(len(items))
                     for c in STAT_COLUMNS], 1)


def fit_mca(catalog: Catalog, data, config: MCAConfig = MCAConfig()) -> tuple[MCACascade, dict]:
    """The cascade over the catalog's items (catalog order) with its ranker fitted on the train
    split of `data` (training/generator_data.GeneratorData)."""
    emb = data.bank.tokens.embedding
    items = catalog.items
    mca = MCACascade(emb[data.bank.rows(items["image"])], item_stats(items), items["price"].to_numpy(), config)
    train, tq = data.evaluation("train")
    ctx = data.context(tq)
    fit = mca.fit(emb[train.image], UserArrays(ctx.short_items, ctx.long_items), train.target_item)
    fit["confidence_threshold"] = calibrate_threshold(emb[train.image], mca.emb[train.target_item]) if len(train) else 0.0
    return mca, fit


def train_mca(catalog: Catalog, tokenizer: Path, registry: Path, cache: Path, progress: bool = True,
              config: MCAConfig = MCAConfig()) -> tuple[Path, dict]:
    from training.generator_data import load_generator_data

    data = load_generator_data(catalog, tokenizer, cache, progress=progress)
    mca, fit = fit_mca(catalog, data, config)
    with tempfile.TemporaryDirectory() as tmp:
        ranker, embedding = Path(tmp) / RANKER, Path(tmp) / ITEM_EMBEDDING
        save_file(mca.arrays(), str(ranker))
        save_file({"embedding": mca.emb}, str(embedding))  # V of each catalog item, catalog order
        version = publish(registry, f"mca-{catalog.name}", {RANKER: ranker, ITEM_EMBEDDING: embedding},
                          config={"kind": "mca", "catalog": catalog.name, "tokenizer": str(tokenizer), "mca": asdict(config)},
                          metrics=fit)
    return version, fit
