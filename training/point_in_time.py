"""Item business stats as training and evaluation may know them: Feast's point-in-time join.

The event log without held-out sessions (`onevision.catalog.history.training_events`) becomes
the stats' history (clicks, orders and GMV over the 30 days before each day boundary,
`onevision.catalog.item_stats.stats_history`); Feast's offline store joins it at the day of every
query (`features.history.stats_as_of`, `get_historical_features`). The result goes on the
catalog: `catalog.stats` (each query's items are ordered and ranked by the stats known at its
time) and the items table's `*_30d` columns, replaced by the stats known at the training cutoff
(what a model trained once may know: the tokenizer's business features, the served cascade).
A catalog without a click or order log keeps the `*_30d` columns it was given, as known at every
time. The join is cached per catalog content (`<cache>/<catalog key>/item-stats-asof.npz`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from onevision.catalog.format import Catalog, catalog_key
from onevision.catalog.history import training_cutoff, training_events
from onevision.catalog.item_stats import STAT_COLUMNS, ItemStatsAsOf, query_times, stats_history

CACHE_FILE = "item-stats-asof.npz"


def point_in_time(catalog: Catalog, cache: Path) -> Catalog:
    """Set `catalog.stats` and the items' `*_30d` columns (module doc); idempotent, returns `catalog`."""
    if catalog.stats is not None:
        return catalog
    items = catalog.items
    events = training_events(catalog)
    if not events["type"].isin(("click", "order")).any():
        given = np.stack([items[c].to_numpy(np.float64) if c in items.columns else np.zeros(len(items))
                          for c in STAT_COLUMNS], 1)
        catalog.stats = ItemStatsAsOf.static(given, items["item_id"].to_numpy())
        return catalog
    cutoff = training_cutoff(catalog)
    path = Path(cache) / catalog_key(catalog) / CACHE_FILE
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            asof = ItemStatsAsOf(items["item_id"].to_numpy(), z["times"], z["stats"])
    else:
        asof = _join(catalog, events, np.append(catalog.queries["ts"].to_numpy(np.int64), cutoff))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, times=asof.times, stats=asof.stats)
        tmp.replace(path)
    catalog.stats = asof
    catalog.items = items.assign(**dict(zip(STAT_COLUMNS, asof.at(cutoff).T)))
    return catalog


def _join(catalog: Catalog, events, ts: np.ndarray) -> ItemStatsAsOf:
    from features.history import stats_as_of

    ids = catalog.items["item_id"].to_numpy()
    history = stats_history(events, ids, catalog.items["price"].to_numpy(np.float64))
    with tempfile.TemporaryDirectory() as work:
        return stats_as_of(history, ids, query_times(ts), Path(work))
