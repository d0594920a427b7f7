"""Replays a catalog's logged events onto `onevision.events` at a chosen rate, in time order,
keyed by user: how the quickstart and the benchmarks feed the workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from infra.settings import Settings
from onevision.catalog.format import load_catalog
from streaming.producer import EventProducer

EVENT_COLUMNS = ["schema", "event_id", "type", "ts", "user_id", "item_id", "request_id", "scene",
                 "position", "price", "variant", "experiment"]


def encode_events(events: pd.DataFrame) -> list[bytes]:
    """Events as schema-1 JSON, one per row (pandas' C encoder: about a microsecond a row). What a
    catalog does not know goes as null: a price it left unknown (NaN) and a position it marks -1
    (an event not logged from a result page: `load_catalog`'s default)."""
    df = events[[c for c in EVENT_COLUMNS if c in events.columns]]
    if "position" in df.columns and (df["position"] < 0).any():
        df = df.assign(position=df["position"].where(df["position"] >= 0).astype("Int64"))
    return [line.encode() for line in df.to_json(orient="records", lines=True).splitlines()]


def load_events(catalog: str | Path) -> pd.DataFrame:
    """A catalog's events in time order, with the format's defaults for the columns it leaves out
    (`load_catalog`: a team's table of type/ts/user_id/item_id replays as valid events)."""
    events = load_catalog(catalog, check_images=False).events
    return events.sort_values("ts", kind="stable").reset_index(drop=True)


def replay(settings: Settings, events: pd.DataFrame, rate: float = 0.0, chunk: int = 500,
           progress: Callable[[int], None] | None = None) -> dict:
    """Produce every event; `rate` events/s (0 = as fast as the producer goes)."""
    values = encode_events(events)
    users = events["user_id"].astype(str).tolist()
    producer = EventProducer(settings)
    start = time.perf_counter()
    try:
        for i in range(0, len(values), chunk):
            for u, v in zip(users[i:i + chunk], values[i:i + chunk]):
                producer.send_raw(u, v)
            if progress:
                progress(min(chunk, len(values) - i))
            if rate > 0:
                ahead = (i + chunk) / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush(None)
    finally:
        producer.close()
    took = time.perf_counter() - start
    return {"events": len(values), "seconds": round(took, 3), "events_per_s": round(len(values) / max(took, 1e-9), 1)}
