"""Shoppers with latent tastes and the behaviour model that turns tastes into clicks and orders.

Tastes: a category mix, a favourite colour, a few liked brands and a price level. Among
near-duplicates (same family) the colour, brand and price are what differ, so the variant a
shopper buys follows from tastes that their history reveals. The same model drives the
history here and, later, the traffic simulator's reaction to what it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from onevision.world.products import BRANDS, CATEGORIES, COLOUR_GROUP_OF, COLOURS


@dataclass(frozen=True)
class BehaviourModel:
    """Weights of the shopper utility and the click/order link functions."""

    w_category: float = 1.0
    w_fav_colour: float = 2.0
    w_colour_group: float = 0.8
    w_brand: float = 1.5
    w_price: float = 2.0
    w_quality: float = 0.8
    position_decay: float = 0.7
    click_bias: float = -1.0
    order_bias: float = -1.2
    choice_temperature: float = 0.5

    def position_bias(self, position: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.asarray(position, dtype=np.float64)) ** self.position_decay


@dataclass
class Shoppers:
    """Latent tastes of all users as arrays (row = user index)."""

    category_pref: np.ndarray  # (U, C) probabilities
    fav_colour: np.ndarray  # (U,) index into COLOURS
    liked_brands: np.ndarray  # (U, 3) indices into BRANDS
    price_level: np.ndarray  # (U,) multiplier of a category's base price
    activity: np.ndarray  # (U,) relative session rate

    @property
    def n(self) -> int:
        return len(self.fav_colour)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": [f"u{u:06d}" for u in range(self.n)],
                "fav_colour": [COLOURS[c] for c in self.fav_colour],
                "liked_brands": [[BRANDS[b] for b in row] for row in self.liked_brands],
                "price_level": self.price_level.round(4),
                "activity": self.activity.round(4),
                "category_pref": [row.round(5).tolist() for row in self.category_pref],
            }
        )

    @classmethod
    def from_frame(cls, users: pd.DataFrame) -> "Shoppers":
        return cls(
            category_pref=np.stack([np.asarray(r, dtype=np.float64) for r in users["category_pref"]]),
            fav_colour=np.array([COLOURS.index(c) for c in users["fav_colour"]]),
            liked_brands=np.array([[BRANDS.index(b) for b in row] for row in users["liked_brands"]]),
            price_level=users["price_level"].to_numpy(np.float64),
            activity=users["activity"].to_numpy(np.float64),
        )


def sample_shoppers(rng: np.random.Generator, n_users: int, n_categories: int) -> Shoppers:
    pref = rng.dirichlet(np.full(n_categories, 0.3), size=n_users)
    liked = np.stack([rng.choice(len(BRANDS), 3, replace=False) for _ in range(n_users)])
    return Shoppers(
        category_pref=pref,
        fav_colour=rng.integers(len(COLOURS), size=n_users),
        liked_brands=liked,
        price_level=np.exp(rng.normal(0, 0.35, n_users)),
        activity=np.exp(rng.normal(0, 0.5, n_users)),
    )


@dataclass
class ItemArrays:
    """Per-item attributes the behaviour model reads, as aligned arrays."""

    category: np.ndarray
    colour: np.ndarray
    colour_group: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    base_price: np.ndarray
    quality: np.ndarray

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> "ItemArrays":
        cat_index = {name: i for i, (name, _, _) in enumerate(CATEGORIES)}
        base = {name: price for name, _, price in CATEGORIES}
        return cls(
            category=items["category"].map(cat_index).to_numpy(),
            colour=items["colour"].map(COLOURS.index).to_numpy(),
            colour_group=items["colour"].map(COLOUR_GROUP_OF).to_numpy(),
            brand=items["brand"].map(BRANDS.index).to_numpy(),
            price=items["price"].to_numpy(np.float64),
            base_price=items["category"].map(base).to_numpy(np.float64),
            quality=items["quality"].to_numpy(np.float64),
        )


def utility(model: BehaviourModel, shoppers: Shoppers, user: int, items: ItemArrays, idx: np.ndarray) -> np.ndarray:
    """How much `user` likes each item in `idx` (before position effects)."""
    n_cat = shoppers.category_pref.shape[1]
    cat = np.log(shoppers.category_pref[user, items.category[idx]] * n_cat + 1e-3)
    fav = shoppers.fav_colour[user]
    colour = np.where(items.colour[idx] == fav, model.w_fav_colour,
                      np.where(items.colour_group[idx] == COLOUR_GROUP_OF[COLOURS[fav]], model.w_colour_group, 0.0))
    brand = np.isin(items.brand[idx], shoppers.liked_brands[user]) * model.w_brand
    target_price = items.base_price[idx] * shoppers.price_level[user]
    price = -model.w_price * np.abs(np.log(items.price[idx] / target_price))
    return model.w_category * np.clip(cat, -3, 3) + colour + brand + price + model.w_quality * items.quality[idx]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def click_prob(model: BehaviourModel, u: np.ndarray, position: np.ndarray) -> np.ndarray:
    """P(click) of an exposed item with utility `u` at 0-based `position`."""
    return model.position_bias(position) * _sigmoid(model.click_bias + u)


def order_prob(model: BehaviourModel, u: np.ndarray) -> np.ndarray:
    """P(order | click) of an item with utility `u`."""
    return _sigmoid(model.order_bias + u)


def order_chances(model: BehaviourModel, u: np.ndarray) -> np.ndarray:
    """P(click) x P(order | click) of each item of a list with utilities `u`, in display order: the
    list's expected orders are their sum."""
    return click_prob(model, u, np.arange(len(u))) * order_prob(model, u)


def choose(rng: np.random.Generator, model: BehaviourModel, u: np.ndarray) -> int:
    """Index of the variant a shopper picks among candidates of utility `u` (softmax choice)."""
    z = u / model.choice_temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(u), p=p / p.sum()))
