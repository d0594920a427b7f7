"""Rows our encoder writes straight to Redis read back through Feast exactly like rows Feast
wrote itself (the claim that lets the workers bypass Feast's slow write path)."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from features.client import feature_store, item_features, user_features
from features.redis_writer import entity_key, item_row, queue_rows, user_row
from infra.settings import redis_client


def test_rows_read_back_through_feast_and_match_feast_bytes(services):
    store = feature_store(services, backend="redis")
    r = redis_client(services.redis)
    ts = 1_767_225_600_123
    with r.pipeline(transaction=True) as pipe:
        queue_rows(pipe, "user_id", [("u-ours", user_row([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], [2, 7, 1, 8, 2], ts,
                                                          [[9, 2, 6, 5, 3], [3, 1, 4, 1, 5]]))])
        queue_rows(pipe, "item_id", [("i-ours", item_row([5, 0, 2, 9, 9], 12, 3, 149.5, 31.25, ts))])
        pipe.execute()

    when = datetime.fromtimestamp(ts / 1000, tz=timezone.utc)
    store.write_to_online_store("user_behaviour", pd.DataFrame({
        "user_id": ["u-feast"], "short_sids": [["3-1-4-1-5", "9-2-6-5-3"]], "long_sid": [[2, 7, 1, 8, 2]],
        "recent_sids": [["9-2-6-5-3", "3-1-4-1-5"]], "event_timestamp": [when]}))
    store.write_to_online_store("item_stats", pd.DataFrame({
        "item_id": ["i-feast"], "sid": [[5, 0, 2, 9, 9]], "clicks_30d": [12], "orders_30d": [3],
        "gmv_30d": [149.5], "s_conv": [31.25], "event_timestamp": [when]}))

    assert r.hgetall(entity_key("user_id", "u-ours")) == r.hgetall(entity_key("user_id", "u-feast"))
    assert r.hgetall(entity_key("item_id", "i-ours")) == r.hgetall(entity_key("item_id", "i-feast"))

    ours, feasts = user_features(store, ["u-ours", "u-feast"])
    assert ours["short_sids"] == feasts["short_sids"] == [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]]
    assert ours["long_sid"] == [2, 7, 1, 8, 2]
    assert ours["recent_sids"] == feasts["recent_sids"] == [[9, 2, 6, 5, 3], [3, 1, 4, 1, 5]]
    a, b = item_features(store, ["i-ours", "i-feast"])
    assert {k: v for k, v in a.items() if k != "item_id"} == {k: v for k, v in b.items() if k != "item_id"}
    assert a["clicks_30d"] == 12 and a["gmv_30d"] == 149.5 and a["s_conv"] == 31.25


def test_unknown_user_reads_empty(services):
    store = feature_store(services, backend="redis")
    (row,) = user_features(store, ["nobody"])
    assert row == {"user_id": "nobody", "short_sids": [], "long_sid": [], "recent_sids": []}
