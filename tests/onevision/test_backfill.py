"""Point-in-time user features: only events strictly before the request count, with the
worker's rules (5 latest image-search clicks, newest first; long-term over clicks and orders)."""

import numpy as np
import pandas as pd

from onevision.behaviour.backfill import user_context
from onevision.items import ItemTable


def table():
    sids = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1], [3, 0]])
    vectors = np.eye(7, dtype=np.float32)
    return ItemTable([f"i{k}" for k in range(7)], sids, vectors)


def ev(ts, type_, item, scene="image_search", user="u1"):
    return {"ts": ts, "type": type_, "item_id": item, "scene": scene, "user_id": user}


def test_only_events_before_the_request_count():
    events = pd.DataFrame([ev(10, "click", "i1"), ev(20, "click", "i2"), ev(30, "click", "i3", scene="feed"),
                           ev(40, "order", "i4"), ev(50, "click", "i5"), ev(60, "click", "unknown-item")])
    ctx = user_context(events, table(), ["u1", "u1", "u1", "u2"], [5, 35, 50, 100])
    assert (ctx.short_items[0] == -1).all() and (ctx.long_sid[0] == -1).all()  # nothing before ts 5
    assert ctx.short_items[1].tolist() == [2, 1, -1, -1, -1]  # feed click is not short-term
    assert ctx.long_items[1].tolist() == [1, 2, 3]  # but it is long-term
    assert ctx.short_items[2].tolist() == [2, 1, -1, -1, -1]  # the click at ts 50 is not before 50
    assert ctx.long_items[2].tolist() == [1, 2, 3, 4]
    assert (ctx.short_sids[1, 0] == [1, 0]).all() and (ctx.short_sids[1, 2] == -1).all()
    assert (ctx.long_sid[3] == -1).all()  # unknown user: cold start


def test_short_term_keeps_the_five_latest_and_long_term_is_a_catalog_sid():
    events = pd.DataFrame([ev(t, "click", f"i{t % 7}") for t in range(1, 9)])
    ctx = user_context(events, table(), ["u1"], [100])
    assert ctx.short_items[0].tolist() == [1, 0, 6, 5, 4]
    assert any((ctx.long_sid[0] == s).all() for s in table().sids)
    blank = ctx.blank()
    assert (blank.short_sids == -1).all() and (blank.long_sid == -1).all() and len(blank.long_items[0]) == 0


def test_recent_sids_are_the_long_term_items_sids_oldest_first():
    events = pd.DataFrame([ev(10, "click", "i1"), ev(20, "order", "i4", scene="feed"), ev(30, "click", "i2")]
                          + [ev(100 + t, "click", "i6", user="u3") for t in range(60)])
    ctx = user_context(events, table(), ["u1", "u2", "u3"], [100, 100, 1000])
    first, cold, busy = ctx.features()
    assert first["recent_sids"] == ["0-1", "2-0", "1-0"] and first["short_sids"] == ["1-0", "0-1"]
    assert cold == {"long_sid": [], "short_sids": [], "recent_sids": []}
    assert ctx.recent_sids.shape == (3, 50, 2) and (ctx.recent_sids[0, 3:] == -1).all()
    assert busy["recent_sids"] == ["3-0"] * 50  # the latest 50
    assert (ctx.blank().recent_sids == -1).all()
