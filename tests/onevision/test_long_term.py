import numpy as np
import pytest

from onevision.behaviour.long_term import CLICK, DAY_MS, ORDER, LongTermConfig, add_action, long_sids
from onevision.items import ItemTable, ItemTableError
from streaming.synthetic import synthetic_table


def table_2d() -> ItemTable:
    # four items on a line; two of them share a SID prefix
    return ItemTable(["a", "b", "c", "d"], [[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 1]],
                     np.array([[0.0, 0], [1, 0], [10, 0], [20, 0]], dtype=np.float32))


def test_mean_mode_follows_the_recent_heavy_side():
    t = table_2d()
    old_a = [(0, "a", CLICK)] * 3
    recent_d = [(60 * DAY_MS, "d", ORDER)]
    (sid,) = long_sids(t, [old_a + recent_d])
    assert sid == [1, 0, 1]  # the order 60 days later outweighs three old clicks
    (sid,) = long_sids(t, [[(0, "a", CLICK), (0, "b", CLICK)]])
    assert sid in ([0, 0, 0], [0, 1, 0])


def test_empty_history_has_no_long_sid():
    assert long_sids(table_2d(), [[], [(0, "c", CLICK)]]) == [None, [1, 0, 0]]


def test_onesearch_eq3_weights_later_items_more_and_snaps_to_a_valid_sid():
    t = table_2d()
    (sid,) = long_sids(t, [[(1, "a", CLICK), (2, "d", CLICK)]], LongTermConfig(mode="onesearch"))
    # mu = exp(sqrt(j)) normalised: (0.32, 0.68); ceil(0.68 * [1, 0, 1]) = [1, 0, 1]
    assert sid == [1, 0, 1]


@pytest.mark.parametrize("mode", ["mean", "onesearch"])
def test_long_sid_is_always_a_catalog_sid(mode):
    t = synthetic_table(n_items=300, levels=5, codes=6, seed=3)
    rng = np.random.default_rng(0)
    histories = []
    for _ in range(200):
        h = []
        for _ in range(int(rng.integers(1, 60))):
            add_action(h, int(rng.integers(0, 90 * DAY_MS)), t.item_ids[int(rng.integers(300))], int(rng.integers(2)))
        histories.append(h)
    sids = long_sids(t, histories, LongTermConfig(mode=mode))
    assert all(t.is_valid(s) for s in sids)
    assert len({tuple(s) for s in sids}) > 10  # not one SID for everyone


def test_history_is_bounded():
    h = []
    for i in range(80):
        add_action(h, i, "a", CLICK, size=50)
    assert len(h) == 50 and h[0][0] == 30


def test_mean_mode_needs_vectors():
    t = ItemTable(["a"], [[0, 0]])
    with pytest.raises(ItemTableError, match="onesearch"):
        long_sids(t, [[(0, "a", CLICK)]])
