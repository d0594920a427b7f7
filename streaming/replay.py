"""Replays a catalog's logged events onto `onevision.events` at a chosen rate, in time order,
keyed by user: how the quickstart and the benchmarks feed the workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from infra.settings import Settings
from streaming.producer import EventProducer

EVENT_COLUMNS = ["schema", "event_id", "type", "ts", "user_id", "item_id", "request_id", "scene",
                 "position", "price", "variant", "experiment"]


def encode_events(events: pd.DataFrame) -> list[bytes]:
    """Events as schema-1 JSON, one per row (pandas' C encoder: about a microsecond a row)."""
    df = events[[c for c in EVENT_COLUMNS if c in events.columns]]
    return [line.encode() for line in df.to_json(orient="records", lines=True).splitlines()]


def load_events(catalog: str | Path) -> pd.DataFrame:
    path = Path(catalog) / "events.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {catalog} a catalog folder?)")
    return pd.read_parquet(path).sort_values("ts", kind="stable").reset_index(drop=True)


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
