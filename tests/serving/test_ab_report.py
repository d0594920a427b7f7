"""The A/B report's arithmetic: grouping by the randomization unit, metrics, intervals and
p-values, a ranking only where differences are significant (with the sample a difference would
need otherwise), and the sample-ratio check."""

import numpy as np
import pytest

from serving.ab_report import experiment_design, markdown, per_unit, summarize
from serving.experiments import DEFAULT_EXPERIMENTS, ExperimentConfig


def events(variant: str, n: int, click_every: int, order_every: int, start: int = 0,
           requests_per_user: int = 1) -> list[dict]:
    out = []
    for r in range(start, start + n):
        rid, user = f"{variant}-{r}", f"u-{variant}-{r // requests_per_user}"
        out += [{"type": "exposure", "request_id": rid, "user_id": user, "variant": variant} for _ in range(10)]
        if r % click_every == 0:
            out.append({"type": "click", "request_id": rid, "user_id": user, "variant": variant})
            if r % order_every == 0:
                out.append({"type": "order", "request_id": rid, "user_id": user, "variant": variant})
    return out


def test_metrics_per_variant_and_p_values():
    ev = events("a", 2000, 2, 10) + events("b", 2000, 2, 10) + events("c", 2000, 4, 40)
    req = per_unit(ev, "request")
    assert {v: r.shape for v, r in req.items()} == {"a": (2000, 6), "b": (2000, 6), "c": (2000, 6)}
    rep = summarize(req, control="a", unit="request")
    a, b, c = (rep["variants"][v] for v in "abc")
    assert a["requests"] == a["units"] == 2000 and a["exposures"] == 20000 and a["clicks"] == 1000
    assert a["orders"] == 200
    assert np.isclose(a["item_ctr"]["value"], 0.05) and np.isclose(a["pv_ctr"]["value"], 0.5)
    assert np.isclose(a["cvr"]["value"], 0.2) and np.isclose(a["orders_per_1k"]["value"], 100)
    lo, hi = a["orders_per_1k"]["ci95"]
    assert lo < 100 < hi
    assert "p_value_vs_control" not in a["orders_per_1k"]
    assert b["orders_per_1k"]["p_value_vs_control"] > 0.5  # the same traffic
    assert c["orders_per_1k"]["p_value_vs_control"] < 1e-6  # 25 vs 100 orders per 1k
    # a and b are one tier (no significant difference), c significantly below both
    assert [sorted(t) for t in rep["ranking_by_orders_per_1k"]] == [["a", "b"], ["c"]]
    assert "Significant" in rep["verdict"] and "a > c" in rep["verdict"] and "b > c" in rep["verdict"]
    assert all(r["p_holm"] >= r["p_value"] for r in rep["comparisons"])
    md = markdown({**rep, "experiment": "x"})
    assert "| c | 2000 |" in md and "p=" in md and "(a, b) > c" in md


def test_overlapping_variants_are_not_ranked_and_the_needed_sample_is_given():
    """The quickstart's case: a few hundred requests, orders rare, intervals overlapping."""
    ev = events("mca", 120, 3, 12) + events("onevision", 120, 3, 15) + events("mca-no-ranking", 120, 3, 9)
    rep = summarize(per_unit(ev, "request"), control="mca", unit="request")
    assert len(rep["ranking_by_orders_per_1k"]) == 1  # one tier: nothing significant
    assert "No difference in orders per 1k requests is significant" in rep["verdict"]
    largest = max(rep["comparisons"], key=lambda r: r["difference"])
    need = largest["units_per_variant_for_80pct_power"]
    assert need > 120 and f"{need:,} requests per variant" in rep["verdict"]
    assert largest["detectable"] > largest["difference"] and "would show at 80% power" in rep["verdict"]
    # at about that many requests per variant the same rates do separate (about 80% of the time)
    n = 4 * need  # comfortably past it, so the test does not flake
    big = summarize(per_unit(events(largest["better"], n, 3, {"mca-no-ranking": 9, "mca": 12, "onevision": 15}
                                    [largest["better"]])
                             + events(largest["worse"], n, 3, {"mca-no-ranking": 9, "mca": 12, "onevision": 15}
                                      [largest["worse"]]), "request"),
                    control=largest["worse"], unit="request")
    assert big["comparisons"][0]["significant"]


def test_intervals_follow_the_randomized_user_not_the_request():
    """Ten requests per user, each user ordering on all or none of them: the users, not the
    requests, are the independent draws, so the interval is wider than a per-request bootstrap's."""
    ev = []
    for v in ("a", "b"):
        for u in range(200):
            for r in range(10):
                rid, user = f"{v}-{u}-{r}", f"{v}-{u}"
                ev.append({"type": "exposure", "request_id": rid, "user_id": user, "variant": v})
                if u % 5 == 0:  # a fifth of the users order every time
                    ev += [{"type": t, "request_id": rid, "user_id": user, "variant": v} for t in ("click", "order")]
    by_user = summarize(per_unit(ev, "user"), control="a", unit="user")
    by_request = summarize(per_unit(ev, "request"), control="a", unit="request")
    assert by_user["variants"]["a"]["units"] == 200 and by_request["variants"]["a"]["units"] == 2000
    assert by_user["variants"]["a"]["requests"] == by_request["variants"]["a"]["requests"] == 2000
    assert by_user["variants"]["a"]["orders_per_1k"]["value"] == pytest.approx(200)

    def width(rep):
        lo, hi = rep["variants"]["a"]["orders_per_1k"]["ci95"]
        return hi - lo

    assert width(by_user) > 2 * width(by_request)  # design effect: 10 perfectly correlated requests per user


def test_a_sample_ratio_mismatch_is_flagged():
    ev = events("a", 1000, 2, 10) + events("b", 600, 2, 10)
    even = summarize(per_unit(ev, "request"), control="a", unit="request", weights={"a": 0.5, "b": 0.5})
    assert even["sample_ratio"]["mismatch"] and even["sample_ratio"]["p_value"] < 1e-6
    assert "SAMPLE-RATIO MISMATCH" in markdown(even)
    planned = summarize(per_unit(ev, "request"), control="a", unit="request", weights={"a": 0.625, "b": 0.375})
    assert not planned["sample_ratio"]["mismatch"] and "Sample ratio as expected" in markdown(planned)
    # a variant of the design that got no traffic at all (its model failed to load, say)
    silent = summarize(per_unit(ev, "request"), control="a", unit="request",
                       weights={"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert silent["sample_ratio"]["mismatch"] and silent["sample_ratio"]["observed"]["c"] == 0
    # a variant the design does not have
    stray = summarize(per_unit(ev + events("z", 10, 2, 10), "request"), control="a", unit="request",
                      weights={"a": 0.625, "b": 0.375})
    assert stray["sample_ratio"]["unexpected"] == ["z"] and "does not have" in markdown(stray)
    unknown = summarize(per_unit(ev, "request"), control="a", unit="request")
    assert unknown["sample_ratio"] == {"checked": False} and "not checked" in markdown(unknown)


def test_tiers_never_claim_an_order_that_was_not_shown():
    from serving.ab_report import _tiers

    out = {v: {"orders_per_1k": {"value": x}} for v, x in (("A", 30.0), ("B", 20.0), ("C", 10.0))}

    def tiers(*significant):
        return _tiers(out, [{"better": a, "worse": b, "significant": (a, b) in significant}
                            for a, b in (("A", "B"), ("A", "C"), ("B", "C"))])

    assert tiers(("A", "B"), ("A", "C"), ("B", "C")) == [["A"], ["B"], ["C"]]
    assert tiers(("A", "C")) == [["A", "B", "C"]]  # A > C alone orders no group
    assert tiers(("A", "B")) == [["A", "B", "C"]]  # A > (B, C) would claim A > C
    assert tiers(("A", "B"), ("A", "C")) == [["A"], ["B", "C"]]
    assert tiers() == [["A", "B", "C"]]


def test_too_few_units_give_no_p_value_rather_than_a_wrong_one():
    ev = events("a", 1, 1, 1) + events("b", 1, 1, 2, start=1)  # one request each: ordered vs not
    rep = summarize(per_unit(ev, "request"), control="a", unit="request")
    assert rep["variants"]["b"]["orders_per_1k"]["p_value_vs_control"] is None
    assert not rep["comparisons"][0]["significant"] and "Too few units" in rep["verdict"]
    assert "p=n/a" in markdown(rep)


def test_a_request_belongs_to_the_user_its_exposures_name():
    ev = events("a", 4, 1, 1)
    ev[-1] = {**ev[-1], "user_id": "someone-else"}  # the last order, reported by another caller
    assert len(per_unit(ev, "user")["a"]) == 4


def test_the_design_comes_from_the_experiment_config():
    config = ExperimentConfig.load(DEFAULT_EXPERIMENTS)
    key, unit, weights = experiment_design(config, "onevision-vs-mca")
    assert key == "onevision-vs-mca" and unit == "user"
    assert weights == pytest.approx({"mca": 0.3334, "onevision": 0.3333, "mca-no-ranking": 0.3333})
    assert experiment_design(config, None) == experiment_design(config, "onevision-vs-mca")  # its only experiment
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        experiment_design(config, "nope")
    # weights the router would not accept split equally, in the report as in serving
    odd = config.model_copy(deep=True)
    odd.layers[0].experiments[0].weights = [1.0, 1.0, 2.0]
    odd.layers[0].experiments[0].hash_attribute = "request_id"
    _, unit, weights = experiment_design(odd, None)
    assert unit == "request" and weights == pytest.approx({"mca": 1 / 3, "onevision": 1 / 3, "mca-no-ranking": 1 / 3})


def test_unknown_control_or_unit_is_a_clear_error():
    with pytest.raises(ValueError, match="control variant 'z'"):
        summarize(per_unit(events("a", 5, 1, 1)), control="z")
    with pytest.raises(ValueError, match="randomization unit 'session'"):
        per_unit(events("a", 5, 1, 1), "session")
