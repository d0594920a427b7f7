"""Give SIDs to items with a trained tokenizer, without retraining: the catalog can grow while
serving. The tokenizer's config names the encoder version it was trained on; that encoder,
the category text encoder and the item's business stats make its inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from onevision.catalog.format import Catalog, write_table
from onevision.encoders.aligned import AlignedEfficientNet, AlignedImageEncoder
from onevision.registry import load_version, resolve
from onevision.tokenizers import load_tokenizer
from onevision.tokenizers.inputs import item_inputs


def encode_catalog_items(tokenizer_version: str | Path, catalog: Catalog, out: Path, progress: bool = True) -> int:
    version = resolve(tokenizer_version)
    tok = load_tokenizer(version)
    _, config = load_version(version)
    encoder = AlignedImageEncoder(AlignedEfficientNet.load(resolve(config["encoder"])))
    inputs, _, _ = item_inputs(catalog, encoder, progress)
    sids = tok.encode(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(pd.DataFrame({"item_id": catalog.items["item_id"], "sid": [list(map(int, r)) for r in sids]}), out)
    return len(sids)
