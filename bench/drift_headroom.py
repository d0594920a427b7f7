"""How much a drift leaves for any model to win, before any model runs: the world's own ground
truth, not a served answer.

For requests drawn the way the simulator draws them (a test photo of item P, a shopper who
would shop for P's category), the candidates are stood in for by P's family (the variants a
photo search finds first) and `--pool` other items of P's category (what a wide beam brings),
the answer is the first 10 of them in a policy's order, and its expected orders are the world's:
the sum over positions of P(click) x P(order | click) under the drifted behaviour at full
strength. Policies:
- `photo_first`: P, its variants, then the others (a search that ignores the shopper);
- `stationary`: by the shopper's own utility without the drift (the best a model of the history
  can do: what a frozen model can reach at most);
- `following`: by the utility with the drift (the best a model that follows it can do);
- `trend_first`: the trend's items first for everyone, then as `stationary`;
- `shared_bonus`: by `stationary`'s utility plus one bonus for the trend's items, the same for
  every shopper (what a ranking term learned from purchases, not from the shopper, could do: the
  `title_lift` the DPO stream job refits); the best of the bonuses `SHARED_BONUSES`, in utility
  units, is reported with it.
The headroom is `following - stationary`; with the request-level variance of orders it gives
the requests per variant an A/B test needs to see it (two-sided 5%, power 80%), the figure that
says whether `bench/dpo_loop.py --drift` can show the loop's worth in its run length at all.
Scenarios: the world's `trend` drift as built, and two what-ifs: every shopper following it, and
its whole colour group rising (for the drift's shoppers).
Writes <--out>/bench_drift_headroom.json.

    python bench/drift_headroom.py                         # the small world, 20,000 requests
    python bench/drift_headroom.py --smoke --out /tmp/b    # the tiny world, 500 requests
"""

from __future__ import annotations

import numpy as np
from common import options, parse, write_report

SMOKE = {"requests": 500}
K = 10  # the list a shopper sees (the simulator's top_k)
Z = 1.96 + 0.8416  # two-sided 5%, power 80%
SHARED_BONUSES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def list_orders(model, u: np.ndarray) -> tuple[float, float]:
    """(expected orders, their variance) of a list whose items have utilities `u`, in display order."""
    from onevision.world.users import order_chances

    p = order_chances(model, u)
    return float(p.sum()), float((p * (1 - p)).sum())


def run(world, trend_items: np.ndarray, follows: np.ndarray, boost: float, n: int, seed: int,
        pool_others: int) -> dict:
    """Mean expected orders per 1k requests per policy, and the requests the headroom needs."""
    from onevision.world.users import utility

    rng = np.random.default_rng(seed)
    by_family: dict = {}
    for r, f in enumerate(world.family):
        by_family.setdefault(f, []).append(r)
    by_category: dict = {}
    for r, c in enumerate(world.arrays.category):
        by_category.setdefault(c, []).append(r)
    bonus = boost * trend_items.astype(float)
    zero = np.zeros(len(bonus))
    shared = {f"shared_bonus {b:g}": b for b in SHARED_BONUSES}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in ("photo_first", "stationary", "following",
                                                                 "trend_first", *shared)}
    touched = 0
    for _ in range(n):
        p, user = world.draw(rng)
        photo_row = world.photo(p)[1]
        family = np.array(by_family[world.family[photo_row]])
        others = np.setdiff1d(by_category[world.arrays.category[photo_row]], family)
        pool = np.concatenate([family, rng.permutation(others)[:pool_others]])  # what the search returns
        mine = bonus if follows[user] else zero
        intent = np.where(world.family[pool] == world.family[photo_row], 0.0, world.intent.other_family)
        base = utility(world.model, world.shoppers, user, world.arrays, pool) + intent
        drifted = base + mine[pool]  # what the shopper's reaction follows
        touched += bool(follows[user] and trend_items[pool].any())
        at = np.arange(len(pool))
        photo = pool == photo_row
        orders = {  # positions in the pool, best first
            "photo_first": np.concatenate([at[photo], at[:len(family)][~photo[:len(family)]], at[len(family):]]),
            "stationary": np.argsort(-base, kind="stable"),
            "following": np.argsort(-drifted, kind="stable"),
            "trend_first": np.lexsort((-base, ~trend_items[pool])),
            **{name: np.argsort(-(base + b * trend_items[pool]), kind="stable") for name, b in shared.items()},
        }
        for name, order in orders.items():
            got[name].append(list_orders(world.model, drifted[order[:K]]))
    out: dict = {"requests": n, "touched_share": round(touched / n, 4), "orders_per_1k": {}}
    for name, rows in got.items():
        mean = np.array([m for m, _ in rows])
        out["orders_per_1k"][name] = round(1000 * float(mean.mean()), 2)
    best = max(shared, key=lambda name: out["orders_per_1k"][name])
    out["shared_bonus_best"] = shared[best]
    got["shared_bonus"] = got[best]
    out["orders_per_1k"]["shared_bonus"] = out["orders_per_1k"][best]
    for name in ("following", "trend_first", "shared_bonus"):
        a, b = np.array([m for m, _ in got[name]]), np.array([m for m, _ in got["stationary"]])
        var_a = a.var() + np.mean([v for _, v in got[name]])
        var_b = b.var() + np.mean([v for _, v in got["stationary"]])
        delta = float(a.mean() - b.mean())
        out[f"{name}_minus_stationary_per_1k"] = round(1000 * delta, 2)
        out[f"{name}_requests_per_variant_needed"] = int(np.ceil(Z ** 2 * (var_a + var_b) / delta ** 2)) \
            if delta > 0 else None
    return out


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=30, help="other items of the photo's category among the candidates")
    args = parse(ap, SMOKE)

    from onevision.catalog.format import load_catalog
    from onevision.world.drift import build_drift, drift_path, load_drift
    from onevision.world.products import COLOUR_GROUP_OF, COLOURS
    from serving.simulator import ShopperWorld

    catalog = load_catalog(args.catalog)
    drift = load_drift(catalog.root, "trend") if drift_path(catalog.root, "trend").is_file() \
        else build_drift(catalog.root, "trend", write=False)  # the world's folder stays as it is
    world = ShopperWorld.load(catalog, drift)
    colour = COLOURS.index(drift.colour)
    group = world.arrays.colour_group == COLOUR_GROUP_OF[drift.colour]
    everyone = np.ones_like(world.trend)
    scenarios = {
        f"trend as built ({drift.colour}, boost {drift.boost:g}, share {drift.share:g})":
            (world.arrays.colour == colour, drift.boost, world.trend),
        "as built, every shopper following it": (world.arrays.colour == colour, drift.boost, everyone),
        f"its whole colour group, share {drift.share:g}": (group, drift.boost, world.trend),
    }
    report = {"world": str(catalog.root), "drift": drift.model_dump(exclude={"trend_users", "repriced"}),
              "list_size": K, "pool_others": args.pool, "scenarios": {}}
    for name, (items, boost, follows) in scenarios.items():
        got = run(world, items, follows, boost, args.requests, args.seed, args.pool)
        got["trend_items"] = int(items.sum())
        report["scenarios"][name] = got
        print(f"{name}: {got}", flush=True)
    path = write_report(args, "bench_drift_headroom.json", report)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
