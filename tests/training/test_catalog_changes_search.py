"""A served model after catalog changes (the tiny world and its next version): launched items,
encoded with the serving tokenizer, are found by their own catalog photo; removed items are never
answered; new prices reach the price term; the cascade takes the same changes."""

from __future__ import annotations

import numpy as np
import pytest

from onevision.baselines.mca_search import CascadeSearch
from onevision.catalog.changes import fold
from onevision.catalog.format import load_catalog
from onevision.generator.image_search import ImageSearch
from onevision.registry import load_version, resolve_ref
from onevision.tokenizers.encode_items import NewItemEncoder, change_batches, changes_between
from onevision.world.next_version import NextVersion, next_version
from training.mca import train_mca


@pytest.fixture(scope="module")
def changed(tiny_world, tiny_generator, tmp_path_factory):
    version, _ = tiny_generator
    out = tmp_path_factory.mktemp("next") / "tiny-next"
    got = next_version(tiny_world, out, NextVersion(adds=12, removes=4, price_changes=6, photos_per_item=1))
    old, new = load_catalog(tiny_world), load_catalog(out)
    tokenizer = resolve_ref(load_version(version)[1]["tokenizer"], version)
    changes = changes_between(old, new, NewItemEncoder(tokenizer), ts=1)
    return old, new, got, changes, tokenizer


def test_new_photos_are_encoded_with_the_serving_tokenizer(changed, tiny_generator):
    old, new, got, changes, tokenizer = changed
    kinds = [c.kind for c in changes]
    assert kinds.count("add") == 12 and kinds.count("remove") == 4 and kinds.count("update") == 6
    adds = [c for c in changes if c.kind == "add"]
    assert all(c.tokenizer == f"{tokenizer.parent.name}/{tokenizer.name}" for c in adds)
    search = ImageSearch.from_registry(tiny_generator[0], old)
    levels, sizes = search.searcher.item_sids.shape[1], search.tokens.sizes
    assert all(len(c.sid) == levels and all(0 <= s < n for s, n in zip(c.sid, sizes)) for c in adds)
    dims = search.searcher.item_embedding.shape[1]
    assert all(len(c.embedding) == dims and abs(np.linalg.norm(c.embedding) - 1) < 1e-3 for c in adds)


def test_changes_come_in_batches_a_publisher_sends_as_they_are_ready(changed):
    """Removals and price changes first (nothing to encode), then the photos a few at a time: the
    same records as in one list."""
    old, new, got, changes, tokenizer = changed
    first, *rest = change_batches(old, new, NewItemEncoder(tokenizer), ts=1, batch=5)
    assert sorted(c.kind for c in first) == ["remove"] * 4 + ["update"] * 6 and all(c.image is None for c in first)
    assert [len(b) for b in rest] == [5, 5, 2] and all(c.kind == "add" for b in rest for c in b)
    batched = {(c.kind, c.item_id): c for b in [first, *rest] for c in b}

    def not_yet() -> NewItemEncoder:
        raise RuntimeError("the encoder loaded before a photo needed it")

    lazy = change_batches(old, new, not_yet, ts=1)
    assert [c.item_id for c in next(lazy)] == [c.item_id for c in first]  # sent before the encoder loads
    with pytest.raises(RuntimeError, match="before a photo needed it"):
        next(lazy)
    whole = {(c.kind, c.item_id): c for c in changes}
    assert batched.keys() == whole.keys()
    for key, c in whole.items():
        b = batched[key]
        assert (b.sid, b.price, b.image, b.tokenizer) == (c.sid, c.price, c.image, c.tokenizer)
        if c.embedding is not None:
            assert np.allclose(b.embedding, c.embedding, atol=1e-5)


def test_launched_items_are_found_by_their_photo_and_removed_ones_never(changed, tiny_generator):
    old, new, got, changes, _ = changed
    search = ImageSearch.from_registry(tiny_generator[0], old)
    photos = [new.root / p for p in new.items.set_index("item_id").loc[got["added"], "image"]]
    before = search.search(photos, beam=16, k=4)
    assert not any(h.item_id in got["added"] for a in before for h in a.hits)
    report = search.apply_changes(fold(changes))
    assert sorted(report["added"]) == sorted(got["added"]) and sorted(report["removed"]) == sorted(got["removed"])
    assert len(search.item_ids) == len(new.items)
    after = search.search(photos, beam=16, k=4)
    found = np.mean([item in [h.item_id for h in a.hits] for item, a in zip(got["added"], after)])
    assert found >= 0.9, found
    removed_photos = [old.root / p for p in old.items.set_index("item_id").loc[got["removed"], "image"]]
    answers = search.search(removed_photos + photos, beam=16, k=10)
    assert not {h.item_id for a in answers for h in a.hits} & set(got["removed"])
    rel = search.served.searcher.price.item_relative_price
    row = search.item_ids.index(got["repriced"][0])
    price = new.items.set_index("item_id")["price"]
    cat = new.items.set_index("item_id")["category"][got["repriced"][0]]
    expect = np.log(price[got["repriced"][0]] / price[new.items.set_index("item_id")["category"] == cat].median())
    assert rel[row] == pytest.approx(expect)


def test_the_cascade_takes_the_same_changes(changed, tiny_generator, tiny_tokenizers, tmp_path):
    old, new, got, changes, tokenizer = changed
    registry = tmp_path / "registry"
    mca_version, _ = train_mca(old, tokenizer, registry, tiny_tokenizers[1], progress=False)
    cascade = CascadeSearch.from_registry(mca_version, old)
    cascade.apply_changes(fold(changes))
    assert set(cascade.item_ids) == set(new.items["item_id"])
    photos = [new.root / p for p in new.items.set_index("item_id").loc[got["added"], "image"]]
    answers = cascade.search(photos, k=4)
    assert np.mean([item in [h.item_id for h in a.hits] for item, a in zip(got["added"], answers)]) >= 0.9
    removed_photos = [old.root / p for p in old.items.set_index("item_id").loc[got["removed"], "image"]]
    assert not {h.item_id for a in cascade.search(removed_photos, k=10) for h in a.hits} & set(got["removed"])
