"""The event log as training and evaluation may read it: no held-out outcome, nothing after.

A val or test query's own session (its clicks and orders, matched by `request_id`) is the
label the query is scored on, so it never feeds a feature: user features (`user_context`) and
item business stats read `training_events`, and every feature of a query is taken at that
query's time (strictly before it). `training_cutoff` is when the evaluation period begins: what
a model trained once (the tokenizer's business features, the served cascade's item stats) may
know.
"""

from __future__ import annotations

import pandas as pd

from onevision.catalog.format import Catalog

HELD_OUT = ("val", "test")


def held_out_requests(catalog: Catalog) -> set[str]:
    q = catalog.queries
    return set(q.loc[q["split"].isin(HELD_OUT), "request_id"].dropna())


def training_events(catalog: Catalog) -> pd.DataFrame:
    """The catalog's events without the sessions of val and test queries (memoized per catalog)."""
    cached = getattr(catalog, "_training_events", None)
    if cached is None:
        ev = catalog.events
        held = ev["request_id"].isin(held_out_requests(catalog)) & ev["request_id"].notna()
        cached = ev[~held].reset_index(drop=True)
        catalog._training_events = cached  # type: ignore[attr-defined]
    return cached


def training_cutoff(catalog: Catalog) -> int:
    """The first val/test query's time (ms): stats a model trains on once are those known then.
    A catalog without held-out queries trains on its whole log."""
    q = catalog.queries
    held = q.loc[q["split"].isin(HELD_OUT), "ts"]
    if len(held):
        return int(held.min())
    return int(catalog.events["ts"].max()) + 1 if len(catalog.events) else 0
