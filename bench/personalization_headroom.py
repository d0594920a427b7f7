"""How much ORDER HR@1 personalization can win on a synthetic world, and how much of that the
shoppers' logged history reveals.

In the world, a shopper photographs a product and buys the family variant (colour, brand or
price) that their latent tastes prefer (`onevision.world.users`). A ranking can only put the
bought variant first if it knows those tastes. This bench measures, on the ORDER queries of the
val and test splits, with the generator behind the served model (its trained run, as `eval
offline` scores it) at `--beam`:

- `w/o P.`: the generator with the user features blanked (no user SIDs, no recent items: no
  price level or category affinity either);
- `w/ P., generator only`: with the request-time user SIDs in the prompt, without the searcher's
  price-affinity (`generator.rank.price_affinity`) and category-affinity (`generator.rank.category_affinity`)
  terms;
- `w/ P., + price term`: the same with the price-affinity term only;
- `w/ P. (served)`: with both terms, as `eval offline` and serving rank;
- `+ history taste`: the generator-only top-k re-scored by tastes estimated from everything the user did
  before the query: smoothed click lifts of each colour, colour group and brand they were shown,
  and how far an item's price is from the price level of what they clicked and ordered;
- `+ true utility` (oracle tastes): re-scored by the world's own utility of each item for that
  user. Not a ceiling: one weight on the whole utility, fitted on the other split, and only
  inside the generator-only top-k (the served terms beat it on the small world).

Each re-score adds weight x taste to an item's search score (its SID's log-prob + similarity
weight x its cosine to the photo). The weights are chosen on one split and scored on the
other (cross-fitted both ways), so the figure is not tuned on the queries it reports. Paired
bootstrap 95% intervals for the differences. Writes <--out>/bench_personalization.json.

    python bench/personalization_headroom.py --catalog data/worlds/small
    python bench/personalization_headroom.py --smoke --out /tmp/bench   # the tiny world, beam 8, top 5
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
import torch
from common import options, parse, served_generator, write_report

from onevision.eval.generative import searcher_for, without_user
from onevision.world.products import BRANDS, CATEGORIES, COLOUR_GROUP_OF, COLOURS
from onevision.world.users import BehaviourModel, ItemArrays, Shoppers, utility

SMOKE = {"beam": 8, "k": 5}
SPLITS = ("val", "test")
SCALES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def candidates(searcher, ex, data, beam: int, k: int, personalized: bool) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores), both (B, k): the searcher's top-k and the score that ranked each."""
    res = searcher.search((ex if personalized else without_user(ex)).prompts(data.tokens, data.bank), beam=beam, k=k)
    return res.items, res.item_scores


class HistoryTaste:
    """A user's tastes from their events before a time: what they were shown and what they took."""

    FEATURES = ("colour", "colour group", "brand", "price")

    def __init__(self, catalog, prior: float = 5.0):
        items = catalog.items
        self.row = {item: i for i, item in enumerate(items["item_id"])}
        self.colour = items["colour"].map(COLOURS.index).to_numpy()
        self.group = items["colour"].map(COLOUR_GROUP_OF).to_numpy()
        self.brand = items["brand"].map(BRANDS.index).to_numpy()
        base = {name: price for name, _, price in CATEGORIES}
        self.rel_price = np.log(items["price"].to_numpy(float) / items["category"].map(base).to_numpy(float))
        self.prior = prior
        ev = catalog.events
        ev = ev.assign(row=ev["item_id"].map(self.row).to_numpy(), took=ev["type"].isin(["click", "order"]).to_numpy())
        self.by_user = {u: g.sort_values("ts") for u, g in ev.groupby("user_id")}

    def features(self, user: str, ts: int, items: np.ndarray) -> np.ndarray:
        """(k, 4): log click lifts of each item's colour, colour group and brand, and minus its
        log price's distance from the user's taken price level (0 where nothing is known)."""
        out = np.zeros((len(items), len(self.FEATURES)))
        g = self.by_user.get(user)
        if g is None:
            return out
        g = g[g["ts"].to_numpy() < ts]
        shown, took = g.loc[g["type"] == "exposure", "row"].to_numpy(), g.loc[g["took"], "row"].to_numpy()
        if len(shown) == 0 or len(took) == 0:
            return out
        rate = len(took) / len(shown)
        safe = np.maximum(items, 0)
        for j, attr in enumerate((self.colour, self.group, self.brand)):
            n = max(int(attr.max()) + 1, 1)
            s, t = np.bincount(attr[shown], minlength=n), np.bincount(attr[took], minlength=n)
            lift = np.log((t + self.prior * rate) / (s * rate + self.prior * rate))
            out[:, j] = lift[attr[safe]]
        out[:, 3] = -np.abs(self.rel_price[safe] - self.rel_price[took].mean())
        return out


def oracle_utility(catalog, q: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """The world's utility of each candidate for the query's user (its latent tastes)."""
    shoppers, arrays = Shoppers.from_frame(catalog.users), ItemArrays.from_items(catalog.items)
    user_row = {u: i for i, u in enumerate(catalog.users["user_id"])}
    model = BehaviourModel()
    return np.stack([utility(model, shoppers, user_row[u], arrays, np.maximum(row, 0))
                     for u, row in zip(q["user_id"], items)])


def hits_at_1(items: np.ndarray, scores: np.ndarray, bonus: np.ndarray, targets: np.ndarray) -> np.ndarray:
    key = np.where(items >= 0, scores + bonus, -np.inf)
    return items[np.arange(len(items)), key.argmax(1)] == targets


def fit_weights(items, scores, feats, targets, grid) -> tuple:
    """The weights of `grid` with the most hits@1 (ties: the smallest, listed first)."""
    best, best_hits = grid[0], -1
    for w in grid:
        h = int(hits_at_1(items, scores, feats @ np.asarray(w), targets).sum())
        if h > best_hits:
            best, best_hits = w, h
    return best


def bootstrap(diff: np.ndarray, rng: np.random.Generator, n: int = 4000) -> list[float]:
    means = diff[rng.integers(len(diff), size=(n, len(diff)))].mean(1)
    return [round(100 * float(x), 2) for x in np.quantile(means, [0.025, 0.975])]


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--beam", type=int, default=256)
    ap.add_argument("--k", type=int, default=10, help="re-score the top k of each search")
    args = parse(ap, SMOKE)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    catalog, version, data, model = served_generator(args)
    missing = {"colour", "brand", "quality"} - set(catalog.items.columns)
    if missing or catalog.users is None or "fav_colour" not in catalog.users.columns:
        raise SystemExit(f"{args.catalog} is not a synthetic world (it lacks the ground-truth tastes and "
                         f"item attributes this bench reads: {sorted(missing) or 'users.parquet tastes'})")
    searcher = searcher_for(model, data)
    price_only = searcher_for(model, data, category_weight=0.0)
    generator_only = searcher_for(model, data, price_weight=0.0, category_weight=0.0)
    taste = HistoryTaste(catalog)
    per: dict[str, dict] = {}
    for split in SPLITS:
        ex, q = data.evaluation(split)
        keep = np.flatnonzero(q["kind"].to_numpy() == "order")
        ex, q = ex.take(keep), q.iloc[keep].reset_index(drop=True)
        got = {p: candidates(searcher, ex, data, args.beam, args.k, p) for p in (False, True)}
        got["generator"] = candidates(generator_only, ex, data, args.beam, args.k, True)
        got["price"] = candidates(price_only, ex, data, args.beam, args.k, True)
        items = got["generator"][0]
        per[split] = {
            "targets": ex.target_item, "got": got,
            "history": np.stack([taste.features(u, t, row) for u, t, row in zip(q["user_id"], q["ts"], items)]),
            "oracle": oracle_utility(catalog, q, items)[..., None],
        }
        print(f"{split}: {len(keep)} order queries searched ({time.perf_counter() - t0:.0f} s)")

    history_grid = [tuple(s * np.asarray(w)) for s in SCALES[1:]
                    for w in itertools.product((0, 0.5, 1), (0, 0.5, 1), (0, 0.5, 1), (0, 1, 2))] + [(0, 0, 0, 0)]
    history_grid = sorted(set(history_grid), key=lambda w: float(np.abs(w).sum()))
    oracle_grid = [(s,) for s in SCALES]
    rng = np.random.default_rng(0)
    names = ("w/o P.", "w/ P., generator only", "w/ P., + price term", "w/ P. (served)", "+ history taste",
             "+ true utility")
    hits: dict[str, list[np.ndarray]] = {name: [] for name in names}
    chosen: dict[str, dict] = {}
    for fit_on, score_on in (("val", "test"), ("test", "val")):
        f, s = per[fit_on], per[score_on]
        items, scores = s["got"]["generator"]
        zero = np.zeros(items.shape)
        hits["w/o P."].append(hits_at_1(*s["got"][False], zero, s["targets"]))
        hits["w/ P., generator only"].append(hits_at_1(items, scores, zero, s["targets"]))
        hits["w/ P., + price term"].append(hits_at_1(*s["got"]["price"], zero, s["targets"]))
        hits["w/ P. (served)"].append(hits_at_1(*s["got"][True], zero, s["targets"]))
        for name, key, grid in (("+ history taste", "history", history_grid),
                                ("+ true utility", "oracle", oracle_grid)):
            w = fit_weights(*f["got"]["generator"], f[key], f["targets"], grid)
            chosen.setdefault(name, {})[f"fit on {fit_on}"] = [round(float(x), 3) for x in w]
            hits[name].append(hits_at_1(items, scores, s[key] @ np.asarray(w), s["targets"]))
    order = [*SPLITS[::-1]]  # hits lists are (test, val): scored on test first
    n = {split: int(len(per[split]["targets"])) for split in SPLITS}
    result = {name: {split: round(100 * float(h.mean()), 2) for split, h in zip(order, hs)}
              for name, hs in hits.items()}
    both = {name: np.concatenate(hs) for name, hs in hits.items()}
    for name in result:
        result[name]["val+test"] = round(100 * float(both[name].mean()), 2)
    gains = {f"{name} - w/o P.": {"points": round(100 * float((both[name].astype(float) - both["w/o P."]).mean()), 2),
                                  "ci95": bootstrap(both[name].astype(float) - both["w/o P."], rng)}
             for name in names[1:]}
    report = {"catalog": str(args.catalog), "generator": str(version), "beam": args.beam, "k": args.k,
              "order_queries": n, "hr1_order": result, "gains_over_no_user": gains, "weights": chosen,
              "history_features": list(HistoryTaste.FEATURES), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"ORDER HR@1 at beam {args.beam} (weights fit on the other split): val {n['val']}, test {n['test']} queries")
    for name, r in result.items():
        print(f"  {name:<22} val {r['val']:6.2f}  test {r['test']:6.2f}  both {r['val+test']:6.2f}")
    for name, g in gains.items():
        print(f"  {name:<32} {g['points']:+.2f} points [{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}]")
    write_report(args, "bench_personalization.json", report)


if __name__ == "__main__":
    main()
