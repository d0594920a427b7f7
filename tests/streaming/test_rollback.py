"""What a worker's roles undo when applying one event fails: the item deltas and the open
sessions are exactly as before the event (`checkpoint`), whatever `observe` had changed."""

from __future__ import annotations

import copy

from streaming.item_stats import DAY_MS, ItemDeltas
from streaming.producer import event
from streaming.sessionizer import Sessionizer
from streaming.user_state import UserState


def test_item_deltas_checkpoint_undoes_an_add():
    d = ItemDeltas()
    d.add("a", 5, clicks=1)
    for item, ts in [("a", 7), ("a", 7 + 3 * DAY_MS), ("b", 9)]:  # same day, a new day, a new item
        before = (copy.deepcopy({k: dict(v) for k, v in d.days.items()}), dict(d.ts))
        undo = d.checkpoint(item, ts)
        d.add(item, ts, orders=1, gmv=2.5)
        undo()
        assert ({k: dict(v) for k, v in d.days.items()}, d.ts) == before


def test_sessionizer_checkpoint_undoes_an_observe():
    s = Sessionizer()
    user = UserState(short=[(1, "x")])
    s.observe(0, event("exposure", "u1", "i1", ts=10, request_id="r1", position=0), user)
    s.take_changes()
    for e in [event("click", "u1", "i1", ts=20, request_id="r1"),  # changes an open session
              event("exposure", "u1", "i2", ts=30, request_id="r2", position=0),  # opens one
              event("exposure", "u2", "i2", ts=40, request_id="r3", position=0)]:
        state = copy.deepcopy((s.open, s.watermark, s.changed, s.closed))
        undo = s.checkpoint(0, e.request_id)
        s.observe(0, e, user)
        undo()
        assert (s.open, s.watermark, s.changed, s.closed) == state
    undo = s.checkpoint(5, "r9")  # a partition the sessionizer has not seen
    s.observe(5, event("exposure", "u1", "i1", ts=50, request_id="r9", position=0), user)
    undo()
    assert 5 not in s.open and 5 not in s.watermark and 5 not in s.changed
