"""The word bonuses learned from purchases: the fit finds what sells beyond position and similarity,
they round-trip through safetensors, and the searcher ranks by them."""

import numpy as np
import pytest

from onevision.generator.rank.title_lift import LiftConfig, PurchaseList, TitleLift, fit_title_lift, title_words
from onevision.generator.sid_items import SIDItems


def test_title_words_are_the_distinct_lower_cased_words():
    assert title_words("Dune retro Lilac checks boot, lilac") == ("dune", "retro", "lilac", "checks", "boot")
    assert title_words(None) == () and title_words(float("nan")) == ()


def shop(n_lists: int, white_gain: float, seed: int = 0) -> tuple[list[PurchaseList], dict[str, str]]:
    """Lists of 6 items, one bought per list by a conditional logit: position -0.5 each place down,
    cosine x 10 (similarity weight 10, true beta 1), +white_gain for the white items."""
    rng = np.random.default_rng(seed)
    titles = {f"i{j}": f"{'white' if j % 5 == 0 else 'grey'} mug {'brandx' if j % 2 else 'brandy'}" for j in range(60)}
    lists = []
    for _ in range(n_lists):
        shown = rng.choice(60, 6, replace=False)
        cos = rng.uniform(0.5, 1.0, 6)
        u = -0.5 * np.arange(6) + 10 * cos + white_gain * (shown % 5 == 0)
        p = np.exp(u - u.max())
        bought = rng.choice(6, p=p / p.sum())
        lists.append(PurchaseList(tuple(f"i{j}" for j in shown), frozenset({f"i{shown[bought]}"}), cos))
    return lists, titles


def test_the_fit_finds_the_word_that_sells_in_score_units():
    lists, titles = shop(3000, white_gain=1.5)
    lift = fit_title_lift(lists, titles, similarity_weight=10.0, config=LiftConfig(l2=1e-4))
    bonus = dict(zip(lift.words, lift.bonus))
    assert set(lift.words) == {"white", "grey", "mug", "brandx", "brandy"}
    # white vs grey is identified (every item has one of them; a word on every item cancels out)
    assert bonus["white"] - bonus["grey"] == pytest.approx(1.5, abs=0.25)
    assert abs(bonus["brandx"] - bonus["brandy"]) < 0.25
    assert lift.fit["beta"] == pytest.approx(1.0, abs=0.1)
    assert lift.fit["nll_per_session"][1] < lift.fit["nll_per_session"][0]
    assert lift.top(1)[0][0] in {"white", "grey"}


def test_a_fixed_beta_is_the_yardstick_the_bonuses_are_divided_by():
    lists, titles = shop(3000, white_gain=1.5)
    config = LiftConfig(l2=1e-4)
    free, true = fit_title_lift(lists, titles, 10.0, config), fit_title_lift(lists, titles, 10.0, config, beta=1.0)
    low = fit_title_lift(lists, titles, 10.0, config, beta=0.5)
    assert true.fit["beta"] == 1.0 and true.fit["beta_fixed"] and not free.fit["beta_fixed"]

    def gap(lift: TitleLift) -> float:
        bonus = dict(zip(lift.words, lift.bonus))
        return bonus["white"] - bonus["grey"]

    assert gap(true) == pytest.approx(1.5, abs=0.25) and gap(true) == pytest.approx(gap(free), abs=0.1)
    assert gap(low) > gap(free) + 0.5  # a yardstick measured too low inflates every bonus: why the job keeps one
    assert fit_title_lift(lists, titles, 10.0, config, beta=0.5).bonus.tolist() == low.bonus.tolist()


def test_a_stationary_shop_teaches_nothing_and_rare_words_get_no_weight():
    lists, titles = shop(3000, white_gain=0.0, seed=1)
    lift = fit_title_lift(lists, titles, similarity_weight=10.0)
    assert np.abs(lift.bonus).max() < 0.2
    few = fit_title_lift(lists[:4], titles, 10.0, LiftConfig(min_count=30))
    assert few.words == () and few.item_bonus(["white mug"]).tolist() == [0.0]
    assert fit_title_lift([], titles, 10.0).words == ()
    broken = PurchaseList(lists[0].shown, lists[0].bought, np.full(6, np.nan))
    kept = fit_title_lift([broken, *lists], titles, 10.0)  # a non-finite list is left out, not spread to all
    assert kept.fit["sessions"] == len(lists) and np.isfinite(kept.bonus).all()
    assert kept.bonus.tolist() == lift.bonus.tolist()


def test_a_lift_round_trips_through_safetensors(tmp_path):
    lift = TitleLift(("white", "mug"), np.array([1.25, -0.5]), {"sessions": 3})
    back = TitleLift.load(lift.save(tmp_path / "lift.safetensors"))
    assert back.words == lift.words and back.bonus.tolist() == [1.25, -0.5] and back.fit == {"sessions": 3}
    assert back.item_bonus(["White mug", "red cup", None]).tolist() == [0.75, 0.0, 0.0]
    assert TitleLift.of_version(tmp_path) is None


def test_the_searcher_ranks_the_item_that_sells_first():
    from functools import partial

    from onevision.generator.rank.searcher import _item_term

    # items 0 and 1 look alike (in SIDs of their own; the beam prefers 0); item 1 is the white one
    sids = np.array([[0, 0], [1, 0]])
    index = SIDItems.build(sids, np.ones(2))
    emb = np.array([[0, 1], [0, 1]], np.float32)
    beams, scores, query = np.array([[[0, 0], [1, 0]]]), np.array([[0.0, -0.5]]), np.array([[0, 1]], np.float32)
    lift = TitleLift(("white",), np.array([1.0]), {}).item_bonus(["grey mug", "white mug"])
    assert index.rescore(beams, 2, scores, query, emb, 10.0, None)[0].tolist() == [[0, 1]]
    assert index.rescore(beams, 2, scores, query, emb, 10.0, partial(_item_term, lift))[0].tolist() == [[1, 0]]
