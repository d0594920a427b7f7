"""The synthetic world: deterministic, multi-view, near-duplicates, and behaviour that follows tastes."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from onevision.catalog.format import load_catalog
from onevision.world.build import build_world, is_built
from onevision.world.camera import CATALOG, SHOPPER, perspective_coeffs, photograph, projected_corners
from onevision.world.config import WorldConfig, preset
from onevision.world.products import COLOUR_GROUP_OF, build_products
from onevision.world.render import front_texture
from onevision.world.users import BehaviourModel, ItemArrays, Shoppers, utility


def _digest(root):
    h = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


def test_same_seed_is_byte_identical_and_worker_count_does_not_matter(tiny_world, tmp_path):
    again = build_world(preset("tiny", workers=1), tmp_path / "again", progress=False)
    assert _digest(tiny_world) == _digest(again.path)


def test_other_seed_differs(tiny_world, tmp_path):
    other = build_world(preset("tiny", seed=7), tmp_path / "other", progress=False)
    a = pd.read_parquet(tiny_world / "items.parquet")
    b = pd.read_parquet(other.path / "items.parquet")
    assert not a["title"].equals(b["title"])


def test_rebuild_is_skipped_and_foreign_dirs_are_protected(tiny_world, tmp_path):
    assert is_built(tiny_world, preset("tiny"))
    again = build_world(preset("tiny"), tiny_world, progress=False)
    assert again.skipped and again.n_items == 120 and again.n_events == len(load_catalog(tiny_world).events)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        build_world(preset("tiny"), foreign, progress=False)


def test_every_item_has_a_catalog_view_and_other_views(tiny_world):
    c = load_catalog(tiny_world)
    assert all(len(v) == 2 for v in c.items["views"])
    img = Image.open(tiny_world / c.items["image"].iloc[0])
    assert img.size == (64, 64)
    corners = np.asarray(img.convert("RGB"))[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners > 230).all(), "the catalog view is shot on white"


def test_near_duplicate_families_differ_in_colour_brand_or_price():
    items, specs = build_products(preset("small", n_items=600), np.random.default_rng(0))
    fams = items.groupby("family_id")
    assert fams.size().max() > 1 and (fams.size() > 1).mean() > 0.3
    for _, fam in fams:
        assert fam["category"].nunique() == 1 and fam["pattern"].nunique() == 1
        base = fam.iloc[0]
        for _, item in fam.iloc[1:].iterrows():
            if item["variation"] == "colour":
                assert item["colour"] != base["colour"]
                assert COLOUR_GROUP_OF[item["colour"]] == COLOUR_GROUP_OF[base["colour"]]
            elif item["variation"] == "brand":
                assert item["brand"] != base["brand"]
            else:
                assert item["variation"] == "price" and item["price"] != base["price"]
    # members share the silhouette genes (same shape), so they look alike
    by_family = {}
    for fam_id, spec in zip(items["family_id"], specs):
        by_family.setdefault(fam_id, set()).add(spec.genes)
    assert all(len(g) == 1 for g in by_family.values())


def test_views_differ_from_the_catalog_shot():
    _, specs = build_products(preset("tiny"), np.random.default_rng(1))
    tex = front_texture(specs[0], 64)
    rng = np.random.default_rng(0)
    cat = np.asarray(photograph(rng, tex, 64, CATALOG), dtype=float)
    shop = np.asarray(photograph(rng, tex, 64, SHOPPER), dtype=float)
    assert np.abs(cat - shop).mean() > 20


def test_perspective_of_a_frontal_view_is_the_identity_scaled():
    corners = projected_corners(100, 0, 0, 0, 1.0, 50, 50)
    assert np.allclose(corners, [[0, 0], [100, 0], [100, 100], [0, 100]])
    src = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], float)
    assert np.allclose(perspective_coeffs(corners, src), [1, 0, 0, 0, 1, 0, 0, 0], atol=1e-9)
    turned = projected_corners(100, 40, 0, 0, 1.0, 50, 50)
    assert not np.allclose(turned, corners)


def test_history_reflects_tastes(tiny_world):
    c = load_catalog(tiny_world)
    shoppers = Shoppers.from_frame(c.users)
    items = c.items.set_index("item_id")
    orders = c.events[c.events["type"] == "order"]
    fav = c.users.set_index("user_id")["fav_colour"]
    share_fav = (items.loc[orders["item_id"], "colour"].to_numpy() == fav.loc[orders["user_id"]].to_numpy()).mean()
    exposures = c.events[c.events["type"] == "exposure"]
    base = (items.loc[exposures["item_id"], "colour"].to_numpy() == fav.loc[exposures["user_id"]].to_numpy()).mean()
    assert share_fav > 2 * base, (share_fav, base)
    # position bias: the first slot is clicked more than the last
    clicks = c.events[c.events["type"] == "click"]
    assert (clicks["position"] == 0).sum() > (clicks["position"] == 9).sum()
    assert shoppers.n == 60


def test_the_variant_bought_is_predictable_from_tastes(tiny_world):
    """Among a query's family, the shopper's utility ranks the bought item first far above chance."""
    c = load_catalog(tiny_world)
    shoppers = Shoppers.from_frame(c.users)
    arrays = ItemArrays.from_items(c.items)
    index = {i: k for k, i in enumerate(c.items["item_id"])}
    fam_of = c.items.set_index("item_id")["family_id"]
    hits, chance = [], []
    for _, q in c.queries.iterrows():
        members = c.items.index[c.items["family_id"] == fam_of[q["target_item_id"]]].to_numpy()
        if len(members) < 2:
            continue
        u = utility(BehaviourModel(), shoppers, int(q["user_id"][1:]), arrays, members)
        hits.append(members[int(np.argmax(u))] == index[q["target_item_id"]])
        chance.append(1 / len(members))
    assert len(hits) > 30
    assert np.mean(hits) > np.mean(chance) + 0.25


def test_queries_are_logged_as_image_search_sessions(tiny_world):
    c = load_catalog(tiny_world)
    q = c.queries.iloc[0]
    ev = c.events[c.events["request_id"] == q["request_id"]]
    assert set(ev["scene"]) == {"image_search"}
    clicked = ev[ev["type"] == "click"]["item_id"]
    assert q["target_item_id"] in set(clicked)
    ordered = set(ev[ev["type"] == "order"]["item_id"])
    assert (q["target_item_id"] in ordered) == (q["kind"] == "order")


def test_business_stats_count_the_last_30_days(tiny_world):
    c = load_catalog(tiny_world)
    cfg = WorldConfig(**{**preset("tiny").model_dump()})
    recent = c.events[c.events["ts"] >= cfg.epoch_ms - 30 * 86_400_000]
    clicks = recent[recent["type"] == "click"].groupby("item_id").size()
    stats = c.items.set_index("item_id")["clicks_30d"]
    assert (stats.loc[clicks.index] == clicks).all()
    assert stats.drop(clicks.index).eq(0).all()


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown world preset 'huge'"):
        preset("huge")


def test_the_variant_bought_is_predictable_from_earlier_history(tiny_world):
    """A plain heuristic over each shopper's earlier clicks and orders (colours, brands, price
    level) picks the bought near-duplicate clearly more often than chance."""
    from onevision.world.products import CATEGORIES

    c = load_catalog(tiny_world)
    items = c.items.set_index("item_id")
    base = {name: price for name, _, price in CATEGORIES}
    items["logrel"] = np.log(items["price"] / items["category"].map(base))
    ev = c.events[c.events["type"].isin(["click", "order"])].join(items[["colour", "brand", "logrel"]], on="item_id")
    by_user = dict(tuple(ev.groupby("user_id")))
    families = c.items.groupby("family_id")["item_id"].apply(list)
    hits, chance = [], []
    for q in c.queries.itertuples():
        members = families[items.loc[q.target_item_id, "family_id"]]
        past = by_user.get(q.user_id)
        if len(members) < 2 or past is None or not (past["ts"] < q.ts).any():
            continue
        past = past[past["ts"] < q.ts]  # nothing from the query itself or later
        m = items.loc[members]
        score = (2 * m["colour"].map(past["colour"].value_counts(normalize=True)).fillna(0).to_numpy()
                 + 2 * m["brand"].map(past["brand"].value_counts(normalize=True)).fillna(0).to_numpy()
                 - np.abs(m["logrel"].to_numpy() - past["logrel"].mean()))
        hits.append(members[int(np.argmax(score))] == q.target_item_id)
        chance.append(1 / len(members))
    assert len(hits) > 50
    assert np.mean(hits) > np.mean(chance) + 0.08, (np.mean(hits), np.mean(chance))
