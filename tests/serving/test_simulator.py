"""The simulated shopper: photos of the test split, users who shop the photo's category, and
reactions that favour the photographed product and the world's position bias."""

import numpy as np
import pytest

from onevision.catalog.format import load_catalog
from serving.simulator import ShopperWorld


@pytest.fixture(scope="module")
def world(tiny_world):
    return ShopperWorld.load(load_catalog(tiny_world))


def test_draws_test_photos_and_users_of_their_category(world, tiny_world):
    q = load_catalog(tiny_world).queries
    assert len(world.photos) == (q["split"] == "test").sum()
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, user = world.draw(rng)
        assert world.shoppers.category_pref[user, world.arrays.category[world.photos[p][1]]] > 0


def test_reactions_favour_the_photographed_product_and_the_top(world):
    photo_item = world.photos[0][1]
    family = np.flatnonzero(world.family == world.family[photo_item])
    other = np.flatnonzero(world.arrays.category != world.arrays.category[photo_item])[: len(family)]
    rng, user = np.random.default_rng(1), 0
    fam_clicks = other_clicks = top = bottom = 0
    for _ in range(3000):
        shown = np.concatenate([family, other])
        clicked, ordered = world.react(rng, user, photo_item, shown)
        assert not (ordered & ~clicked).any()
        fam_clicks += clicked[: len(family)].sum()
        other_clicks += clicked[len(family):].sum()
        c2, _ = world.react(rng, user, photo_item, np.repeat(photo_item, 10))
        top, bottom = top + c2[0], bottom + c2[-1]
    assert fam_clicks > 5 * other_clicks and top > 1.5 * bottom


def test_a_catalog_without_ground_truth_is_refused(tiny_world, tmp_path):
    catalog = load_catalog(tiny_world)
    catalog.users = None
    with pytest.raises(ValueError, match="not a synthetic world"):
        ShopperWorld.load(catalog)
