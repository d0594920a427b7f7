"""Catalogs shaped like a team's own data run through every offline stage at the tiny preset, and
no held-out outcome reaches a feature.

Shapes (README "Bring your own data"): one photo per item (no views); logs without exposures,
request ids, scenes, positions or variants; queries without `ts` or `request_id`; unknown
prices; a click-only test set (and a clicks-only log); an order-only test set (and an
orders-only log); queries that accept several items. Each miniature is the tiny world rewritten
to that shape.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog, write_table
from onevision_cli.main import app


def _reshape(src, dst, keep_types: tuple[str, ...], test_kind: str):
    """The tiny world as a team's export: one photo per item, prices unknown, a bare log of
    `keep_types`, queries without ts/request ids, the test split all `test_kind`, and every other
    test query also accepting another item of its target's category."""
    shutil.copytree(src, dst)
    items = pd.read_parquet(dst / "items.parquet")
    items = items[["item_id", "image", "category", "title"]]
    write_table(items, dst / "items.parquet")
    ev = pd.read_parquet(dst / "events.parquet")
    ev = ev.loc[ev["type"].isin(keep_types), ["type", "ts", "user_id", "item_id"]]
    write_table(ev.reset_index(drop=True), dst / "events.parquet")
    q = pd.read_parquet(dst / "queries.parquet")
    q = q[["query_id", "image", "user_id", "target_item_id", "kind", "split"]].copy()
    q.loc[q["split"] == "test", "kind"] = test_kind
    category = dict(zip(items["item_id"], items["category"]))
    same = items.groupby("category")["item_id"].apply(list).to_dict()
    accepted = []
    for k, (target, split) in enumerate(zip(q["target_item_id"], q["split"])):
        others = [i for i in same[category[target]] if i != target]
        accepted.append([target, others[0]] if split == "test" and k % 2 and others else [target])
    q["target_item_ids"] = accepted
    write_table(q, dst / "queries.parquet")
    return dst


SHAPES = {"clicks-log, click-only test": (("click",), "click"),
          "orders-log, order-only test": (("order",), "order")}


@pytest.mark.timeout(1800)  # the whole offline pipeline, twice (see the module doc)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_offline_stage_runs_on_a_team_shaped_catalog(shape, tiny_world, tmp_path):
    keep_types, test_kind = SHAPES[shape]
    root = _reshape(tiny_world, tmp_path / "team", keep_types, test_kind)
    c = load_catalog(root)
    assert c.items["price"].isna().all() and "views" not in c.items.columns
    assert c.events["request_id"].isna().all() and (c.events["scene"] == "unknown").all()
    paths = ["--registry", str(tmp_path / "reg"), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs")]
    run = CliRunner().invoke(app, ["eval", "offline", "--catalog", str(root), "--preset", "tiny", "--no-ablations",
                                   "--reports", str(tmp_path / "reports"), *paths])
    assert run.exit_code == 0, run.output
    report = json.loads((tmp_path / "reports" / "offline_team.json").read_text())
    other = "order" if test_kind == "click" else "click"
    assert report["n_queries"][other] == 0 and report["n_queries"][test_kind] > 0
    for name, row in report["methods"].items():
        m = row["sets"][test_kind]
        assert all(np.isfinite(m[k]) and 0 <= m[k] <= 1 for k in ("HR@1", "HR@4", "MRR@10")), name
        assert "HR@4" not in row["sets"][other], name  # an absent query set is reported as absent
    md = (tmp_path / "reports" / "offline_team.md").read_text()
    assert f"{test_kind.upper()} HR@4" in md and f"{other.upper()} HR@4" not in md
    assert (tmp_path / "reports" / "offline_team.png").stat().st_size > 10_000
    # every generator stage trained on examples, and none produced a NaN loss
    gen_runs = list((tmp_path / "runs").glob("generator-vrq-team/*/"))
    assert gen_runs
    for stage in ("pretrain", "sft", "personalized-sft", "dpo"):
        state = json.loads((gen_runs[0] / stage / "state.json").read_text())
        assert state["finished"] and not state.get("skipped"), stage
        assert state["losses"] and np.isfinite(state["losses"]).all(), stage
    distill = CliRunner().invoke(app, ["train", "distill", "--catalog", str(root), "--preset", "tiny", "--epochs", "1",
                                       *paths])
    assert distill.exit_code == 0, distill.output


def test_several_acceptable_items_count_a_hit_on_any():
    from onevision.metrics.retrieval import retrieval_metrics

    ranked = np.array([[5, 2, 9], [7, 1, 3]])
    one = retrieval_metrics(ranked, np.array([2, 3]))
    many = retrieval_metrics(ranked, np.array([[2, 5], [3, -1]]))
    assert one["HR@1"] == 0.0 and many["HR@1"] == 0.5 and many["MRR@4"] == pytest.approx((1 + 1 / 3) / 2)


def test_test_split_orders_change_no_feature_a_train_example_or_evaluated_query_reads(tiny_world, tiny_tokenizers,
                                                                                    tmp_path):
    """Adding orders to the test split (to the test requests' own sessions, a minute after each
    test photo) leaves every feature read by a train example or a val/test query unchanged:
    item stats at each query's time and at the training cutoff, the tokenizer's business inputs,
    and every user's short- and long-term SIDs."""
    from onevision.catalog.history import training_cutoff
    from onevision.generator.data import load_generator_data
    from onevision.registry import resolve
    from onevision.tokenizers.inputs import business_features
    from training.point_in_time import point_in_time

    registry, _, _ = tiny_tokenizers
    tok = resolve(registry / "tokenizer-vrq-tiny")

    def features(root, cache):
        c = point_in_time(load_catalog(root), cache)
        data = load_generator_data(c, tok, tmp_path / "bank", progress=False)
        out = {"cutoff": training_cutoff(c), "business": business_features(c.items)}
        for split in ("train", "val", "test"):
            ex, q = data.evaluation(split)
            out[split] = (c.stats.stats[c.stats.index(q["ts"].to_numpy())], ex.long_sid, ex.short_sids, ex.recent_sids)
        out["window"] = data.personalized(seed=0)
        return out

    before = features(tiny_world, tmp_path / "cache-before")
    leaky = shutil.copytree(tiny_world, tmp_path / "leaky")
    ev = pd.read_parquet(leaky / "events.parquet")
    q = pd.read_parquet(leaky / "queries.parquet")
    test = q[q["split"] == "test"]
    popular = ev.loc[ev["type"] == "order", "item_id"].value_counts().index[:3]
    extra = [dict(ev.iloc[0]) | {"event_id": f"leak-{k}", "type": "order", "ts": int(ts) + 60_000, "user_id": user,
                                 "item_id": popular[k % 3], "request_id": req, "scene": "image_search",
                                 "price": 99.0}
             for k, (ts, user, req) in enumerate(zip(test["ts"], test["user_id"], test["request_id"]))]
    ev = pd.concat([ev, pd.DataFrame(extra).astype(ev.dtypes.to_dict())]).sort_values("ts", kind="stable")
    write_table(ev.reset_index(drop=True), leaky / "events.parquet")
    after = features(leaky, tmp_path / "cache-after")

    assert before["cutoff"] == after["cutoff"]
    np.testing.assert_array_equal(before["business"], after["business"])
    for split in ("train", "val", "test"):
        for a, b in zip(before[split], after[split]):
            np.testing.assert_array_equal(a, b)
    for name in ("long_sid", "short_sids", "recent_sids", "target"):
        np.testing.assert_array_equal(getattr(before["window"], name), getattr(after["window"], name))
    # the added orders are in the log and would have counted, had the held-out sessions not been set aside
    assert len(load_catalog(leaky).events) == len(load_catalog(tiny_world).events) + len(extra)
