"""The models a service replica hosts, behind one interface: a generator version
(`ImageSearch`, method onevision) or the cascade (`CascadeSearch`, methods mca and
mca-no-ranking) per experiment variant, searched a batch at a time. Plain Python (no Ray), so
it can be timed and tested on its own; `serving.app` batches requests into it.

Live S_conv: items that share a SID are ordered by S_conv (eq. 13); `use_s_conv` gives every
model the online store's values, which the item-stats worker keeps current from the event stream
(the service reads them every `ITEM_STATS_S`), instead of the catalog's as of its build.

Hot swap: a variant that names no version follows its model's registry CURRENT. `refresh()`
(the service calls it every few seconds from a background thread) loads a new CURRENT off the
request path and then swaps it in with one reference assignment; a batch already running keeps
the model it started with, so no request fails or sees half a swap. A version that fails to load
is reported and the old one keeps serving.

Catalog changes: `apply_catalog` gives every hosted model the items' states after the changes the
replica has read from `onevision.catalog` (`streaming.catalog_stream`); each model rebuilds what it
derives from its items off the request path and swaps it in as one (`ImageSearch.apply_changes`).
A version loaded later gets every change read so far before it serves. A change encoded with
another tokenizer than a model's is refused by that model (counted): its SID would mean something
else there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from serving.experiments import ExperimentConfig

log = logging.getLogger(__name__)


METHODS = ("onevision", "mca", "mca-no-ranking")


def default_model(catalog: Path, method: str = "onevision") -> str:
    """The registry model a variant of `method` serves unless it names one."""
    from onevision.baselines.mca import registry_name

    return f"generator-vrq-{Path(catalog).name}" if method == "onevision" else registry_name(Path(catalog).name)


class ServedModels:
    def __init__(self, catalog, registry: str | Path, config: ExperimentConfig, beam: int = 256, device: str = "cpu"):
        from onevision.registry_store import RegistryView

        # a local path, or a URL every node reads (s3://...): versions are copied to this node and checked
        self.registry = RegistryView(registry)
        self.catalog_data, self.beam, self.device = catalog, beam, device
        self.follow: dict[str, str] = {}  # variant -> model whose CURRENT it follows (no pinned version)
        self.method: dict[str, str] = {}  # variant -> onevision | mca | mca-no-ranking
        self.versions: dict[str, str] = {}  # variant -> "model/vNNNN" serving it
        self.searches: dict = {}  # (method, "model/vNNNN") -> ImageSearch or CascadeSearch
        self.swaps, self.failed_loads = 0, 0
        self.live_s_conv: dict[str, float] = {}  # item id -> the online store's S_conv (`use_s_conv`)
        self.catalog_states: dict = {}  # item id -> catalog.changes.ItemState: every change read so far
        self.catalog_counts = {"applied": 0, "refused": 0, "skipped": 0, "batches": 0}
        self._catalog_lock = threading.Lock()  # a model joins `searches` with every change read before it
        self._encoders: dict = {}  # tokenizer version -> NewItemEncoder (`encode_items`)
        for v in config.variants:
            if v.method not in METHODS:
                raise ValueError(f"variant {v.name!r}: unknown method {v.method!r}; one of {', '.join(METHODS)}")
            self.method[v.name] = v.method
            model = v.model or default_model(catalog.root, v.method)  # the catalog the models were trained on
            if v.version is None:
                self.follow[v.name] = model
            self._serve(v.name, model, v.version or self._current(model))

    def _current(self, model: str) -> str:
        version = self.registry.current_version(model)
        if version is None:
            how = "onevision train mca" if model.startswith("mca-") else "onevision train all"
            raise FileNotFoundError(f"{self.registry}/{model} has no current version: train it first ({how})")
        return version

    def _serve(self, variant: str, model: str, version: str) -> None:
        """Load `model/version` if no variant serves it the same way yet, then point `variant` at it."""
        from onevision.baselines.mca_search import CascadeSearch
        from onevision.generator.image_search import ImageSearch

        method, name = self.method[variant], f"{model}/{version}"
        if (method, name) not in self.searches:
            path = self.registry.version_dir(model, version)
            loaded = (ImageSearch.from_registry(path, self.catalog_data, self.device) if method == "onevision"
                      else CascadeSearch.from_registry(path, self.catalog_data, ranking=method == "mca"))
            if self.live_s_conv:
                loaded.use_s_conv(self.live_s_conv)
            with self._catalog_lock:
                if self.catalog_states:
                    self._apply(loaded, self.catalog_states)
                self.searches = {**self.searches, (method, name): loaded}  # one assignment: readers see old or new
        self.versions = {**self.versions, variant: name}

    def refresh(self) -> list[str]:
        """Swap in every followed model's new CURRENT; returns the variants that changed."""
        changed = []
        for variant, model in self.follow.items():
            try:
                version = self._current(model)
                if self.versions[variant] != f"{model}/{version}":
                    self._serve(variant, model, version)
                    changed.append(variant)
            except Exception:  # a broken version must not take the service down
                self.failed_loads += 1
                log.exception("could not load the new version of %s for variant %s; still serving %s",
                              model, variant, self.versions[variant])
        if changed:
            self.swaps += len(changed)
            live = {(self.method[v], name) for v, name in self.versions.items()}
            self.searches = {k: v for k, v in self.searches.items() if k in live}
        return changed

    def use_s_conv(self, live: dict[str, float]) -> None:
        """Every hosted model, and each one loaded later, orders items inside SIDs by these live
        S_conv values (item id -> value; the service reads them from the online store). Values
        equal to the last ones change nothing and rebuild nothing."""
        if live == self.live_s_conv:
            return
        self.live_s_conv = dict(live)
        for search in list(self.searches.values()):
            search.use_s_conv(self.live_s_conv)

    def _apply(self, search, states: Mapping) -> dict[str, list[str]]:
        """Apply item states to one model, refusing those encoded with another tokenizer."""
        from onevision.catalog.changes import acceptable

        ok, refused = acceptable(states, search.expects())
        report = search.apply_changes(ok)
        self.catalog_counts["refused"] += len(refused)
        self.catalog_counts["skipped"] += len(report["skipped"])
        return report

    def apply_catalog(self, states: Mapping, changed: Mapping) -> dict[str, list[str]]:
        """`states`: every changed item's state after all changes read (kept for versions loaded
        later); `changed`: the states of the items the newest changes touched, applied to every
        hosted model now. Returns the first model's report."""
        with self._catalog_lock:
            self.catalog_states = dict(states)
            reports = [self._apply(search, changed) for search in list(self.searches.values())]
            self.catalog_counts["applied"] += len(changed)
            self.catalog_counts["batches"] += 1
        return reports[0] if reports else {}

    def item_ids(self) -> list[str]:
        """Every item some hosted model serves now (whose live S_conv the replica reads)."""
        return sorted({i for search in list(self.searches.values()) for i in search.item_ids})

    def catalog_info(self) -> dict:
        """What the catalog changes did here: counts, and each hosted model's item count."""
        return {**self.catalog_counts, "items": {f"{m}:{n}": len(s.item_ids) for (m, n), s in self.searches.items()}}

    def encode_items(self, photos: list[bytes], items: list[dict]) -> list[dict]:
        """New items' SIDs, reconstructions and V embeddings with the tokenizer of the first
        variant's model: what a catalog change publisher needs (`POST /v1/catalog`)."""
        import pandas as pd

        from onevision.tokenizers.encode_items import NewItemEncoder

        variant, version = next(iter(self.versions.items()))  # one read: a swap may replace the dict meanwhile
        search = self.searches[self.method[variant], version]
        name = search.tokenizer
        if name not in self._encoders:
            self._encoders[name] = NewItemEncoder(self.registry.version_dir(*name.split("/")), search.encoder)
        enc = self._encoders[name]
        got = enc.encode(photos, pd.DataFrame(items), reference=search.served.items.frame)
        return [{"sid": got.sids[k].tolist(), "vector": got.vectors[k].tolist(), "embedding": got.embedding[k].tolist(),
                 "tokenizer": enc.name} for k in range(len(items))]

    def search(self, queries: list[dict]) -> list[dict]:
        """Each query: variant, image (PIL), user (Feast features), scene, top_k; searched in one
        batch per (variant, scene). Each answer also says how big its batch was and how long the
        batch took, and carries the photo's visual tokens when the variant's model computed them
        (logged for the streaming DPO job)."""
        t0 = time.perf_counter()
        versions, searches = self.versions, self.searches  # this batch's models, whatever swaps meanwhile
        out: list[dict] = [{} for _ in queries]
        groups: dict[tuple[str, str], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q["variant"], q["scene"]), []).append(i)
        for (variant, scene), rows in groups.items():
            version = versions[variant]
            k = max(queries[i]["top_k"] for i in rows)
            answers = searches[self.method[variant], version].search([queries[i]["image"] for i in rows],
                                                                     [queries[i]["user"] for i in rows], scene=scene,
                                                                     beam=self.beam, k=k)
            for i, ans in zip(rows, answers):
                hits = [{"item_id": h.item_id, "score": h.score, "sid": h.sid} for h in ans.hits[: queries[i]["top_k"]]]
                out[i] = {"hits": hits, "low_confidence": ans.low_confidence, "similarity": ans.similarity,
                          "model_version": version, "visual": ans.visual}
        for o in out:
            o["batch_size"], o["compute_s"] = len(queries), time.perf_counter() - t0
        return out
