"""Give SIDs to items with a trained tokenizer, without retraining: the catalog can grow while
serving. The tokenizer's config names the encoder version it was trained on; that encoder,
the category text encoder and the item's business stats make its inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from onevision.catalog.format import Catalog, write_table
from onevision.encoders.aligned import AlignedEfficientNet, AlignedImageEncoder
from onevision.registry import load_version, resolve
from onevision.tokenizers import load_tokenizer
from onevision.tokenizers.inputs import item_inputs


def write_item_sids(item_ids: Sequence[str], sids: np.ndarray, path: Path, vectors: np.ndarray | None = None) -> None:
    """The item -> SID table (item_id, sid as a list of ints) every later stage reads, with each
    item's quantized vector (what its codes reconstruct) when given: the streaming long-term
    SID averages these and re-quantizes the mean to the nearest catalog SID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {"item_id": list(item_ids), "sid": [list(map(int, r)) for r in sids]}
    if vectors is not None:
        table["vector"] = [np.asarray(v, dtype=np.float32) for v in vectors]
    write_table(pd.DataFrame(table), path)


def encode_catalog_items(tokenizer_version: str | Path, catalog: Catalog, out: Path, progress: bool = True) -> int:
    version = resolve(tokenizer_version)
    tok = load_tokenizer(version)
    _, config = load_version(version)
    encoder = AlignedImageEncoder(AlignedEfficientNet.load(resolve(config["encoder"])))
    inputs, _, _ = item_inputs(catalog, encoder, progress)
    sids = tok.encode(inputs)
    write_item_sids(catalog.items["item_id"], sids, out, tok.quantized(inputs))
    return len(sids)
