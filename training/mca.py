"""Recipe `train mca`: fit the cascade baseline (OneVision's MCA) and publish it for serving.

ANN recall and pre-rank need no training; the ranker is fitted list-wise on the train split's
shopper photos with the user features at request time, exactly as the offline evaluation fits
it (`fit_mca` is shared). Published as `mca-<catalog>`: the ranker and its feature scaling and V's
item embeddings (catalog order) in safetensors, the config (cascade sizes, the tokenizer whose
encoder V embeds photos and items),
the fit's figures and a confidence threshold for the low-confidence flag.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from safetensors.numpy import save_file

from onevision.baselines.mca import ITEM_EMBEDDING_FILE, RANKER_FILE, MCACascade, MCAConfig, UserArrays, registry_name
from onevision.catalog.format import Catalog, catalog_fingerprint
from onevision.generator.sid_items import calibrate_threshold
from onevision.registry import publish
from training.point_in_time import point_in_time


def fit_mca(catalog: Catalog, data, config: MCAConfig = MCAConfig()) -> tuple[MCACascade, dict]:
    """The cascade over the catalog's items (catalog order) with its ranker fitted on the train
    split of `data` (onevision.generator.data.GeneratorData)."""
    emb = data.bank.tokens.embedding
    items = catalog.items
    mca = MCACascade.for_items(items, emb[data.bank.rows(items["image"])], config)
    train, tq = data.evaluation("train")
    ctx = data.context(tq)
    fit = mca.fit(emb[train.image], UserArrays(ctx.short_items, ctx.long_items), train.target_item, catalog.stats,
                  train.ts)
    fit["confidence_threshold"] = (calibrate_threshold(emb[train.image], mca.emb[train.target_item]) if len(train)
                                   else 0.0)
    return mca, fit


def train_mca(catalog: Catalog, tokenizer: Path, registry: Path, cache: Path, progress: bool = True,
              config: MCAConfig = MCAConfig()) -> tuple[Path, dict]:
    from onevision.generator.data import load_generator_data

    point_in_time(catalog, cache)  # the ranker learns from stats known at each train request's time
    data = load_generator_data(catalog, tokenizer, cache, progress=progress)
    mca, fit = fit_mca(catalog, data, config)
    with tempfile.TemporaryDirectory() as tmp:
        ranker, embedding = Path(tmp) / RANKER_FILE, Path(tmp) / ITEM_EMBEDDING_FILE
        save_file(mca.arrays(), str(ranker))
        save_file({"embedding": mca.emb}, str(embedding))  # V of each catalog item, catalog order
        version = publish(registry, registry_name(catalog.name), {RANKER_FILE: ranker, ITEM_EMBEDDING_FILE: embedding},
                          config={"kind": "mca", "catalog": catalog.name,
                                  "catalog_fingerprint": catalog_fingerprint(catalog), "tokenizer": str(tokenizer),
                                  "mca": asdict(config)},
                          metrics=fit)
    return version, fit
