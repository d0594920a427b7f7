from onevision.behaviour.short_term import add_click, short_items


def test_keeps_five_latest_newest_first():
    short = []
    for t in range(1, 8):
        add_click(short, t * 1000, f"i{t}")
    assert short_items(short) == ["i7", "i6", "i5", "i4", "i3"]


def test_late_click_lands_in_time_order_and_old_ones_fall_off():
    short = []
    for t, item in [(10, "a"), (30, "c"), (20, "b")]:
        add_click(short, t, item)
    assert short_items(short) == ["c", "b", "a"]
    for t, item in [(40, "d"), (50, "e"), (5, "too-old")]:
        add_click(short, t, item)
    assert short_items(short) == ["e", "d", "c", "b", "a"]


def test_same_time_keeps_arrival_order_newest_first():
    short = []
    add_click(short, 10, "first")
    add_click(short, 10, "second")
    assert short_items(short) == ["first", "second"] or short_items(short) == ["second", "first"]
    assert len(short) == 2
