from streaming.producer import event
from streaming.sessionizer import OpenSession, Sessionizer
from streaming.user_state import UserState


def test_session_outcome_and_snapshot():
    s = Sessionizer(timeout_ms=1000, idle_s=1e9)
    user = UserState(short=[(5, "old-click")])
    for pos, item in enumerate(["a", "b", "c", "d"]):
        s.observe(0, event("exposure", "u", item, ts=100 + pos, request_id="r1", position=pos), user)
    user.short.insert(0, (200, "b"))  # the worker applies the click after the sessionizer saw it
    s.observe(0, event("click", "u", "b", ts=200, request_id="r1"), user)
    s.observe(0, event("click", "u", "c", ts=201, request_id="r1"), user)
    s.observe(0, event("order", "u", "c", ts=202, request_id="r1"), user)
    assert s.close_due() == []  # event time has not moved past the timeout
    s.observe(0, event("exposure", "u2", "a", ts=5000, request_id="r2", position=0), UserState())
    (closed,) = s.close_due()
    assert closed.request_id == "r1" and closed.short == ["old-click"]
    assert closed.outcome() == {"exposed": ["a", "b", "c", "d"], "purchased": ["c"],
                                "clicked_not_bought": ["b"], "exposed_not_clicked": ["a", "d"]}
    changed, gone = s.take_changes()
    assert gone == {0: {"r1"}} and set(changed[0]) == {"r2"}


def test_clicks_without_an_open_session_open_nothing_and_other_scenes_are_ignored():
    s = Sessionizer()
    s.observe(0, event("click", "u", "a", ts=1, request_id="never-shown"), UserState())
    s.observe(0, event("exposure", "u", "a", ts=1, request_id="feed-1", scene="feed"), UserState())
    assert s.open.get(0, {}) == {}


def test_open_sessions_survive_serialisation():
    s = Sessionizer()
    s.observe(1, event("exposure", "u", "a", ts=1, request_id="r", position=0), UserState(long=[(0, "x", 1)]))
    raw = s.open[1]["r"].to_json()
    back = OpenSession.from_json(raw)
    assert back.exposed == [(0, "a")] and back.long == [(0, "x", 1)]


def test_close_all_flushes_everything():
    s = Sessionizer()
    s.observe(0, event("exposure", "u", "a", ts=1, request_id="r", position=0), UserState())
    assert [x.request_id for x in s.close_all()] == ["r"]
