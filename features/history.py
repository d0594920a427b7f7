"""Point-in-time item stats from Feast's offline store.

`stats_as_of` writes the stats' history (`onevision.catalog.item_stats.stats_history`) to
Parquet, applies the declarative view in `features/repo/history.py` to an in-process Feast
store with a file offline store, and reads each item's stats as of each time with
`get_historical_features`: the latest history row at or before the time, so a training feature
never sees events from the period it is evaluated on.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore, RepoConfig

from onevision.catalog.item_stats import STAT_COLUMNS, ItemStatsAsOf

REPO = Path(__file__).parent / "repo"
PROJECT = "onevision_history"
_ROW = "__row"


def history_definitions(path: str) -> tuple[list, str]:
    """The entity, source and view of `features/repo/history.py` for a history file at `path`,
    and the view's name (imported by path: the repo is a Feast repo, not a package)."""
    spec = importlib.util.spec_from_file_location("onevision_history_definitions", REPO / "history.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.history_definitions(path), module.VIEW


@contextmanager
def _quiet() -> Iterator[None]:
    """Feast's and its dependencies' warnings and info logs, silenced for one join. (Feast 0.67
    sends no usage telemetry, and its OpenLineage emitter is off unless the RepoConfig names one.)"""
    loggers = [logging.getLogger(name) for name in ("feast", "dask", "distributed")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _store(workdir: Path) -> FeatureStore:
    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry=str(workdir / "registry.db"),
        online_store={"type": "sqlite", "path": str(workdir / "online.db")},  # unused: offline reads only
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(workdir),
    )
    return FeatureStore(config=config)


def stats_as_of(history: pd.DataFrame, item_ids: Sequence[str] | np.ndarray, times_ms: Sequence[int] | np.ndarray,
                workdir: Path) -> ItemStatsAsOf:
    """Each item's STAT_COLUMNS as of each time, joined point-in-time by Feast's offline store.

    `history`: `stats_history`'s rows (`item_id`, `event_timestamp` UTC, the stats). `times_ms`:
    strictly ascending int ms. An item with no history row at or before a time has zeros; a NaN
    gmv_30d stays NaN (`history` must end each item with its drop to zero, as stats_history's
    does, for the view never to expire a nonzero row). The result follows the order of
    `item_ids` and `times_ms`."""
    ids = np.asarray(item_ids, dtype=object)
    times = np.asarray(times_ms, dtype=np.int64)
    if len(times) > 1 and not (np.diff(times) > 0).all():
        raise ValueError("times_ms must be strictly ascending")
    stats = np.zeros((len(times), len(ids), len(STAT_COLUMNS)), dtype=np.float64)
    history = history[history["item_id"].isin(ids)]
    if len(history) == 0 or len(ids) == 0 or len(times) == 0:
        return ItemStatsAsOf(item_ids=ids, times=times, stats=stats)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "item_stats_history.parquet"
    columns = ["item_id", "event_timestamp", *STAT_COLUMNS]
    history[columns].astype({"item_id": str}).to_parquet(path, index=False)

    t_pos, i_pos = np.divmod(np.arange(len(times) * len(ids)), len(ids))
    entity_df = pd.DataFrame({
        "item_id": ids[i_pos].astype(str),
        "event_timestamp": pd.to_datetime(times[t_pos], unit="ms", utc=True),
        _ROW: np.arange(len(t_pos)),
    })
    with _quiet():
        store = _store(workdir)
        objects, view = history_definitions(str(path))
        store.apply(objects)
        out = store.get_historical_features(entity_df=entity_df,
                                            features=[f"{view}:{c}" for c in STAT_COLUMNS]).to_df()
    rows = out[_ROW].to_numpy()
    if len(out) > len(entity_df) or len(np.unique(rows)) != len(rows):
        raise RuntimeError(f"Feast returned {len(out)} rows for {len(entity_df)} entity rows")
    # Feast's file store keeps an entity row with no history at all (nulls) but drops one whose
    # item only has rows after its time: both mean no history before the time, so zeros. (A row
    # older than the TTL is never the latest nonzero one: stats drop to zero `days` after.)
    values = out[list(STAT_COLUMNS)].astype("float64").to_numpy()
    values[out["clicks_30d"].isna().to_numpy()] = 0.0
    flat = stats.reshape(-1, len(STAT_COLUMNS))
    flat[rows] = values
    return ItemStatsAsOf(item_ids=ids, times=times, stats=stats)
