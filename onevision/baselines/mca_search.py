"""Image search through the MCA cascade, the unit serving hosts for the MCA variants: photo bytes
and the user's Feast features in, ranked items out, with the same answer shape as the
generator's `ImageSearch` so the two are interchangeable behind one interface.

The cascade's user features are item rows; the feature store holds SIDs. Each short-term SID
stands for its best item by S_conv and the long-term SID for all of its items (the same grouping
the generator's results use, `generator.sid_items.SIDItems`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from onevision.baselines.mca import MCACascade, UserArrays, load_mca
from onevision.behaviour.short_term import SHORT_LEN
from onevision.catalog.changes import Expect, ItemState
from onevision.catalog.served import ServedItems
from onevision.encoders.aligned import AlignedEfficientNet
from onevision.encoders.visual_tokens import encode_images
from onevision.generator.image_search import Hit, SearchAnswer
from onevision.generator.sid_items import SIDItems, low_confidence, s_conv
from onevision.images import load_rgb
from onevision.items import parse_sid


@dataclass(frozen=True)
class ServedCascade:
    """One catalog version under the fitted ranker: items, their cascade (recall index, stats,
    prices) and SID groups, swapped as one."""

    items: ServedItems
    mca: MCACascade
    groups: SIDItems


class CascadeSearch:
    def __init__(self, encoder: AlignedEfficientNet, mca: MCACascade, items: ServedItems, threshold: float = 0.0,
                 ranking: bool = True, tokenizer: str = ""):
        """`mca`: the fitted cascade over `items`; `tokenizer`: the version that gave their SIDs."""
        self.encoder, self.threshold, self.ranking, self.tokenizer = encoder.eval(), threshold, ranking, tokenizer
        self.live_s_conv: dict[str, float] = {}
        self._lock = threading.Lock()
        self.served = ServedCascade(items, mca, SIDItems.build(items.sids, s_conv(items.frame)))

    @property
    def mca(self) -> MCACascade:
        return self.served.mca

    @property
    def item_ids(self) -> list[str]:
        return self.served.items.item_ids

    @property
    def item_sids(self) -> np.ndarray:
        return self.served.items.sids

    def _groups(self, items: ServedItems) -> SIDItems:
        return SIDItems.build_live(items.sids, items.item_ids, s_conv(items.frame), self.live_s_conv)

    def expects(self) -> Expect:
        """What a catalog change's encoded fields must be here: the tokenizer's SID length, V's width."""
        served = self.served
        return Expect(self.tokenizer or None, (2**31,) * served.items.sids.shape[1], served.mca.emb.shape[1])

    def apply_changes(self, states: Mapping[str, ItemState]) -> dict[str, list[str]]:
        """As `ImageSearch.apply_changes`: the cascade over the changed items (the fitted ranker
        kept), swapped in as one."""
        with self._lock:
            old = self.served
            items, report = old.items.apply(states)
            if any(report[k] for k in ("added", "updated", "removed")):
                mca = MCACascade.for_items(items.frame, np.asarray(items.embedding, np.float32), old.mca.cfg)
                mca.load_arrays(old.mca.arrays())
                self.served = ServedCascade(replace(items, embedding=mca.emb), mca, self._groups(items))
        return report

    def use_s_conv(self, live: Mapping[str, float]) -> None:
        """As `ImageSearch.use_s_conv`: which item stands for a user's short-term SID follows live S_conv."""
        with self._lock:
            self.live_s_conv = dict(live)
            self.served = replace(self.served, groups=self._groups(self.served.items))

    def users(self, users: Sequence[dict], served: ServedCascade | None = None) -> UserArrays:
        served = served or self.served
        short = np.full((len(users), SHORT_LEN), -1, np.int64)
        long: list[np.ndarray] = []
        levels, g = served.items.sids.shape[1], served.groups
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
        served = self.served  # this search's catalog, whatever changes meanwhile
        mca, item_ids, item_sids = served.mca, served.items.item_ids, served.items.sids
        pil = [load_rgb(img) for img in images]
        query = encode_images(self.encoder, pil).embedding
        rows = mca.rank(query, self.users(users or [{}] * len(pil), served), k=k, ranking=self.ranking)
        sims = np.einsum("bd,bkd->bk", query, mca.emb[np.maximum(rows, 0)])
        flag, best = low_confidence(query, mca.emb, rows, self.threshold)
        return [SearchAnswer([Hit(item_ids[i], item_sids[i].tolist(), float(s))
                              for i, s in zip(r, sim) if i >= 0],
                             bool(f), float(b)) for r, sim, f, b in zip(rows, sims, flag, best)]

    @classmethod
    def from_registry(cls, version: Path, catalog, ranking: bool = True) -> "CascadeSearch":
        """A published `mca-<catalog>` (training/mca.py) over `catalog`, the catalog it was fitted on."""
        from onevision.items import load_item_table
        from onevision.registry import load_version, read_version, resolve_ref, version_name

        mca, manifest = load_mca(version, catalog.items)
        tokenizer = resolve_ref(read_version(version)[1]["tokenizer"], version)
        encoder = AlignedEfficientNet.load(resolve_ref(load_version(tokenizer)[1]["encoder"], tokenizer))
        items = catalog.items
        table = load_item_table(tokenizer, vectors=False)
        sids = table.sids[table.indices(items["item_id"])]
        return cls(encoder, mca, ServedItems.of(items, sids, mca.emb),
                   float(manifest["metrics"].get("confidence_threshold", 0.0)), ranking=ranking,
                   tokenizer=version_name(tokenizer))
