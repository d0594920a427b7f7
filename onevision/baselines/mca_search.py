"""Image search through the MCA cascade, the unit serving hosts for the MCA variants: photo bytes
and the user's Feast features in, ranked items out, with the same answer shape as the
generator's `ImageSearch` so the two are interchangeable behind one interface.

The cascade's user features are item rows; the feature store holds SIDs. Each short-term SID
stands for its best item by S_conv and the long-term SID for all of its items (the same grouping
the generator's results use, `generator.sid_items.SIDItems`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from onevision.baselines.mca import MCACascade, UserArrays, load_mca
from onevision.behaviour.short_term import SHORT_LEN
from onevision.encoders.aligned import AlignedEfficientNet
from onevision.encoders.visual_tokens import encode_images
from onevision.generator.image_search import Hit, SearchAnswer
from onevision.generator.sid_items import SIDItems, low_confidence
from onevision.images import load_rgb
from onevision.items import parse_sid


class CascadeSearch:
    def __init__(self, encoder: AlignedEfficientNet, mca: MCACascade, item_ids: Sequence[str], item_sids: np.ndarray,
                 s_conv: np.ndarray, threshold: float = 0.0, ranking: bool = True):
        self.encoder, self.mca, self.item_ids = encoder.eval(), mca, list(item_ids)
        self.item_sids = np.asarray(item_sids, np.int64)
        self.catalog_s_conv = np.asarray(s_conv, np.float64)
        self.groups = SIDItems.build(self.item_sids, s_conv)
        self.threshold, self.ranking = threshold, ranking

    def use_s_conv(self, live: Mapping[str, float]) -> None:
        """As `ImageSearch.use_s_conv`: which item stands for a user's short-term SID follows live S_conv."""
        self.groups = SIDItems.build_live(self.item_sids, self.item_ids, self.catalog_s_conv, live)

    def users(self, users: Sequence[dict]) -> UserArrays:
        short = np.full((len(users), SHORT_LEN), -1, np.int64)
        long: list[np.ndarray] = []
        levels, g = self.item_sids.shape[1], self.groups
        for r, user in enumerate(users):
            sids = [parse_sid(s, levels) for s in list(user.get("short_sids") or [])[:SHORT_LEN]]
            for j, group in enumerate(g.groups(np.array(sids)) if sids else []):
                short[r, j] = g.members[g.starts[group]] if group >= 0 else -1
            group = g.groups(np.array([parse_sid(user["long_sid"], levels)]))[0] if user.get("long_sid") else -1
            long.append(g.members[g.starts[group]:g.starts[group + 1]] if group >= 0 else np.zeros(0, np.int64))
        return UserArrays(short, long)

    def search(self, images: Sequence[bytes | str | Path | Image.Image], users: Sequence[dict] | None = None,
               scene: str = "image_search", beam: int = 0, k: int = 10) -> list[SearchAnswer]:
        """`scene` and `beam` are the generator's; the cascade ignores them."""
        pil = [load_rgb(img) for img in images]
        query = encode_images(self.encoder, pil).embedding
        rows = self.mca.rank(query, self.users(users or [{}] * len(pil)), k=k, ranking=self.ranking)
        sims = np.einsum("bd,bkd->bk", query, self.mca.emb[np.maximum(rows, 0)])
        flag, best = low_confidence(query, self.mca.emb, rows, self.threshold)
        return [SearchAnswer([Hit(self.item_ids[i], self.item_sids[i].tolist(), float(s))
                              for i, s in zip(r, sim) if i >= 0],
                             bool(f), float(b)) for r, sim, f, b in zip(rows, sims, flag, best)]

    @classmethod
    def from_registry(cls, version: Path, catalog, ranking: bool = True) -> "CascadeSearch":
        """A published `mca-<catalog>` (training/mca.py) over `catalog`, the catalog it was fitted on."""
        from onevision.generator.sid_items import s_conv
        from onevision.items import load_item_table
        from onevision.registry import load_version, read_version, resolve_ref

        mca, manifest = load_mca(version, catalog.items)
        tokenizer = resolve_ref(read_version(version)[1]["tokenizer"], version)
        encoder = AlignedEfficientNet.load(resolve_ref(load_version(tokenizer)[1]["encoder"], tokenizer))
        items = catalog.items
        table = load_item_table(tokenizer, vectors=False)
        sids = table.sids[table.indices(items["item_id"])]
        return cls(encoder, mca, items["item_id"], sids, s_conv(items),
                   float(manifest["metrics"].get("confidence_threshold", 0.0)), ranking=ranking)
