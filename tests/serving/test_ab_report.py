"""The A/B report's arithmetic: per-request grouping, metrics, intervals and p-values."""

import numpy as np

from serving.ab_report import markdown, per_request, summarize


def events(variant: str, n: int, click_every: int, order_every: int, start: int = 0) -> list[dict]:
    out = []
    for r in range(start, start + n):
        rid = f"{variant}-{r}"
        out += [{"type": "exposure", "request_id": rid, "variant": variant} for _ in range(10)]
        if r % click_every == 0:
            out.append({"type": "click", "request_id": rid, "variant": variant})
            if r % order_every == 0:
                out.append({"type": "order", "request_id": rid, "variant": variant})
    return out


def test_metrics_per_variant_and_p_values():
    ev = events("a", 2000, 2, 10) + events("b", 2000, 2, 10) + events("c", 2000, 4, 40)
    req = per_request(ev)
    assert {v: r.shape for v, r in req.items()} == {"a": (2000, 3), "b": (2000, 3), "c": (2000, 3)}
    rep = summarize(req, control="a")
    a, b, c = (rep["variants"][v] for v in "abc")
    assert a["requests"] == 2000 and a["exposures"] == 20000 and a["clicks"] == 1000 and a["orders"] == 200
    assert np.isclose(a["item_ctr"]["value"], 0.05) and np.isclose(a["pv_ctr"]["value"], 0.5)
    assert np.isclose(a["cvr"]["value"], 0.2) and np.isclose(a["orders_per_1k"]["value"], 100)
    lo, hi = a["orders_per_1k"]["ci95"]
    assert lo < 100 < hi
    assert "p_value_vs_control" not in a["orders_per_1k"]
    assert b["orders_per_1k"]["p_value_vs_control"] > 0.5  # the same traffic
    assert c["orders_per_1k"]["p_value_vs_control"] < 1e-6  # 25 vs 100 orders per 1k
    assert rep["ranking_by_orders_per_1k"][-1] == "c"
    md = markdown({**rep, "experiment": "x"})
    assert "| c | 2000 |" in md and "p=" in md


def test_unknown_control_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="control variant 'z'"):
        summarize(per_request(events("a", 5, 1, 1)), control="z")
