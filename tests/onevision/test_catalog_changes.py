"""Catalog change records: what they must carry, the wire form, the fold; the diff of two world
versions; the served items and the workers' item table after changes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from onevision.catalog.changes import (
    CatalogChangeError,
    Expect,
    acceptable,
    check_encoded,
    diff_catalogs,
    fold,
    new_change,
    parse_change,
    photo_text,
)
from onevision.catalog.format import load_catalog
from onevision.catalog.served import ServedItems
from onevision.items import ItemTable
from onevision.world.next_version import NextVersion, next_version

PHOTO = photo_text(b"\xff\xd8\xff not really a jpeg")  # the records do not decode photos, only base64
ENC = {"image": PHOTO, "sid": [1, 2, 0], "vector": [0.5, 0.5], "embedding": [0.6, 0.8], "tokenizer": "tok/v0001"}


def add(item: str, **over) -> dict:
    return {"title": f"{item} title", "category": "mugs", "price": 10.0, **ENC, **over}


def test_an_add_needs_the_whole_item_and_an_update_needs_a_field():
    with pytest.raises(CatalogChangeError, match="sid"):
        parse_change({"kind": "add", "item_id": "x", "title": "t", "category": "c", "image": PHOTO,
                      "embedding": [1.0], "tokenizer": "t/v1"})
    with pytest.raises(CatalogChangeError, match="changes nothing"):
        parse_change({"kind": "update", "item_id": "x"})
    with pytest.raises(CatalogChangeError, match="new photo needs"):
        parse_change({"kind": "update", "item_id": "x", "image": PHOTO})
    with pytest.raises(CatalogChangeError, match="price"):
        parse_change({"kind": "update", "item_id": "x", "price": -1})
    with pytest.raises(CatalogChangeError):
        parse_change(b"{not json")
    with pytest.raises(CatalogChangeError, match="schema"):
        parse_change({"schema": 2, "kind": "remove", "item_id": "x"})


def test_the_wire_form_keeps_only_what_a_change_sets():
    up = new_change("update", "x", 5, price=None)  # an explicit null: the price becomes unknown
    wire = json.loads(up.to_json())
    assert set(wire) == {"schema", "change_id", "kind", "item_id", "ts", "price"} and wire["price"] is None
    back = parse_change(up.to_json())
    assert back.change_id == up.change_id and back.changes() == {"price"}
    title = parse_change(new_change("update", "x", 5, title="new").to_json())
    assert title.changes() == {"title"}  # the price is not touched


def test_fold_keeps_an_added_items_sid_through_later_updates_and_only_an_add_revives():
    s = fold([new_change("add", "n1", 1, **add("n1")), new_change("update", "n1", 2, price=12.5)])
    assert s["n1"].sid == [1, 2, 0] and s["n1"].price == 12.5 and s["n1"].title == "n1 title"
    s = fold([new_change("remove", "n1", 3), new_change("update", "n1", 4, price=1.0)], s)
    assert s["n1"].removed and s["n1"].price == 1.0
    s = fold([new_change("add", "n1", 5, **add("n1", price=None))], s)
    assert not s["n1"].removed and s["n1"].price is None and s["n1"].price_set
    one_by_one = {}
    changes = [new_change("add", "a", 1, **add("a")), new_change("update", "a", 2, title="t2"),
               new_change("remove", "b", 3)]
    for c in changes:
        one_by_one = fold([c], one_by_one)
    assert one_by_one == fold(changes)


def test_records_a_consumer_cannot_build_on_are_refused():
    changes = [new_change("add", "a", 1, **add("a")), new_change("add", "b", 1, **add("b", tokenizer="other/v0002")),
               new_change("add", "c", 1, **add("c", sid=[1, 2])), new_change("update", "d", 1, price=3.0),
               new_change("add", "e", 1, **add("e", sid=[1, 2, 9])),
               new_change("add", "f", 1, **add("f", embedding=[1.0, 0.0, 0.0])),
               new_change("add", "g", 1, **add("g", vector=[1.0]))]
    why = check_encoded(changes, Expect("tok/v0001", (4, 4, 4), dim=2, vector_dim=2))
    assert why[0] == "" and "other/v0002" in why[1] and "2 codes" in why[2] and why[3] == ""
    assert "codebook" in why[4] and "3 dimensions" in why[5] and "vector has 1" in why[6]
    ok, refused = acceptable(fold(changes), Expect("tok/v0001", (4, 4, 4), dim=2, vector_dim=2))
    assert set(ok) == {"a", "d"} and set(refused) == {"b", "c", "e", "f", "g"}


def test_a_photo_must_be_base64_and_come_with_all_it_encodes_to():
    with pytest.raises(CatalogChangeError, match="base64"):
        parse_change({"kind": "add", "item_id": "x", "title": "t", "category": "c", **{**ENC, "image": "abc"}})
    with pytest.raises(CatalogChangeError, match="vector"):
        parse_change({"kind": "update", "item_id": "x", **{k: v for k, v in ENC.items() if k != "vector"}})
    with pytest.raises(CatalogChangeError, match="only with a new photo"):
        parse_change({"kind": "update", "item_id": "x", "price": 2.0, "sid": [1, 2, 3]})


@pytest.fixture(scope="module")
def versions(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("next") / "tiny-next"
    got = next_version(tiny_world, out, NextVersion(adds=6, removes=3, price_changes=4, photos_per_item=1))
    return load_catalog(tiny_world), load_catalog(out), got


def test_next_version_launches_new_items_with_shopper_photos_and_leaves_the_base_alone(versions, tiny_world):
    old, new, got = versions
    assert len(got["added"]) == 6 and not set(got["added"]) & set(old.items["item_id"])
    assert set(got["removed"]).isdisjoint(new.items["item_id"]) and len(new.items) == len(old.items) + 6 - 3
    photos = new.queries[new.queries["target_item_id"].isin(got["added"])]
    assert len(photos) == 6 and set(photos["split"]) == {"test"}
    assert all((new.root / p).is_file() for p in photos["image"])
    assert not new.queries["target_item_id"].isin(got["removed"]).any()
    assert load_catalog(tiny_world).items.equals(old.items)  # the base is untouched


def test_diff_of_two_versions_names_each_change(versions):
    old, new, got = versions
    diff = diff_catalogs(old, new)
    assert sorted(diff.added["item_id"]) == sorted(got["added"]) and sorted(diff.removed) == sorted(got["removed"])
    assert set(diff.updated) == set(got["repriced"]) and all(f == {"price"} for f in diff.updated.values())
    assert diff_catalogs(new, new).counts() == {"added": 0, "updated": 0, "removed": 0}


def test_a_photo_is_compared_by_its_bytes_not_its_file(versions, tmp_path):
    """A copy holding the same bytes is no change (every photo below is a copy, not the linked
    file); new bytes under the same name are a new photo."""
    _, new, _ = versions
    copy = tmp_path / "copy"
    shutil.copytree(new.root, copy)  # the links followed: files of their own
    photo = copy / new.items["image"].iloc[0]
    photo.write_bytes(photo.read_bytes() + b"\0")
    diff = diff_catalogs(new, load_catalog(copy, check_images=False))
    assert diff.updated == {new.items["item_id"].iloc[0]: {"image"}} and diff.counts()["added"] == 0


def served(n: int = 4) -> ServedItems:
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "title": ["t"] * n, "category": ["mugs"] * n,
                          "price": [1.0 + k for k in range(n)], "orders_30d": [k for k in range(n)]})
    return ServedItems.of(items, np.arange(3 * n).reshape(n, 3) % 4, np.eye(n, 2, dtype=np.float32))


def test_served_items_take_adds_removals_prices_and_new_photos():
    base = served()
    states = fold([new_change("add", "n1", 1, **add("n1", embedding=[0.0, 1.0])), new_change("remove", "i1", 1),
                   new_change("update", "i2", 1, price=None), new_change("update", "i3", 1, **ENC),
                   new_change("update", "ghost", 1, price=2.0), new_change("remove", "ghost2", 1)])
    after, report = base.apply(states)
    assert report == {"added": ["n1"], "updated": ["i2", "i3"], "removed": ["i1"], "skipped": ["ghost", "ghost2"]}
    assert after.item_ids == ["i0", "i2", "i3", "n1"] and after.added == {"n1"}
    assert np.isnan(after.frame["price"][1]) and after.frame["orders_30d"].tolist() == [0, 2, 3, 0]
    assert after.sids[2].tolist() == [1, 2, 0] and after.sids[3].tolist() == [1, 2, 0]
    np.testing.assert_allclose(after.embedding[[2, 3]], [[0.6, 0.8], [0.0, 1.0]])
    again, report = after.apply(states)  # states, not instructions: applying them twice changes nothing more
    assert again.item_ids == after.item_ids and not report["added"] and not report["removed"]


def test_the_workers_table_learns_new_sids_and_keeps_removed_items():
    table = ItemTable(["a", "b"], np.array([[0, 1, 2], [1, 1, 1]]), np.array([[0.1, 0.2], [0.3, 0.4]]), "tok/v0001")
    states = fold([new_change("add", "n", 1, **add("n")), new_change("remove", "a", 1),
                   new_change("update", "b", 1, price=4.0)])
    after, changed = table.with_changes(states)
    assert changed == ["n"] and after.item_ids == ["a", "b", "n"] and after.sid("n") == [1, 2, 0]
    np.testing.assert_allclose(after.vectors[2], [0.5, 0.5])
    assert after.nearest_sids(np.array([[0.5, 0.5]])).tolist() == [[1, 2, 0]]
    assert table.with_changes(states)[0].with_changes(states)[1] == []  # known already: nothing to learn
