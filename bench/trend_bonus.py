"""What a bonus for the trend's word wins on the answers the generator really serves: how big the
title lift's bonus would have to be, in the served score's units, before a long loop is run.

`bench/drift_headroom.py` ranks stand-in candidates by the world's own utilities; this bench
ranks the served ones by the served score. For `--requests` requests drawn as the simulator
draws them (`ShopperWorld.draw`: a test photo, a shopper who would shop for its category), the
catalog's current generator searches the photo at serving's beam with the shopper's features at
the end of the history, and keeps its first `--pool` items with the score each was ranked by
(`SearchResult.item_scores`: log-prob + 80 x cosine + price and category terms). Every bonus `b`
of `--bonuses` re-ranks them by score + b x [the trend's colour is a word of the title] (the
title lift's form: one bonus per word, the same for every shopper), and the first 10 are judged
by their expected orders under the drift at full strength: the sum over positions of P(click) x
P(order | click) with the world's own click and order model (`ShopperWorld.utilities`, the
intent term included). Requests are paired across bonuses, so the differences to b = 0 are
precise even where the orders themselves vary a lot. Writes <--out>/bench_trend_bonus.json and
a plot.

    python bench/trend_bonus.py                          # the small world, 3,000 requests
    python bench/trend_bonus.py --smoke --out /tmp/b     # the tiny world, 40 requests
"""

from __future__ import annotations

import numpy as np
from common import ensure_models, options, parse, save_figure, write_report

SMOKE = {"requests": 40, "beam": 16, "pool": 20, "batch": 8}
K = 10  # the list a shopper sees (the simulator's top_k)


def expected_orders(world, user: int, photo_item: int, shown: np.ndarray) -> float:
    """Expected orders of a list of world item rows, in display order, at the drift's full strength."""
    from onevision.world.users import order_chances

    return float(order_chances(world.model, world.utilities(user, photo_item, shown, strength=1.0)).sum())


def interval(diff: np.ndarray) -> list[float]:
    """95% interval of a mean per 1,000 requests (normal; the requests are independent draws)."""
    mean = float(diff.mean())
    half = 1.96 * float(diff.std(ddof=1)) / float(np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return [round(1000 * (mean - half), 2), round(1000 * (mean + half), 2)]


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--beam", type=int, default=256, help="serving's beam (serving.models.ServedModels)")
    ap.add_argument("--pool", type=int, default=100, help="served items kept per request, re-ranked by each bonus")
    ap.add_argument("--bonuses", default="0,2,4,8,12,16,20,30", help="score units, comma separated (0 first)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap, SMOKE)
    ensure_models(args)

    from tqdm import tqdm

    from onevision.behaviour.backfill import user_context
    from onevision.catalog.format import load_catalog
    from onevision.catalog.history import training_events
    from onevision.generator.image_search import ImageSearch
    from onevision.generator.rank.title_lift import title_words
    from onevision.items import load_item_table
    from onevision.registry import load_version, resolve, resolve_ref
    from onevision.world.drift import build_drift, drift_path, load_drift
    from serving.models import default_model
    from serving.simulator import ShopperWorld

    bonuses = [float(b) for b in args.bonuses.split(",")]
    if bonuses[0] != 0:
        raise SystemExit("--bonuses must start with 0, the served order the others are compared with")
    catalog = load_catalog(args.catalog)
    drift = load_drift(catalog.root, "trend") if drift_path(catalog.root, "trend").is_file() \
        else build_drift(catalog.root, "trend", write=False)  # the world's folder stays as it is
    world = ShopperWorld.load(catalog, drift)
    version = resolve(args.registry / default_model(catalog.root))
    search = ImageSearch.from_registry(version, catalog)
    world_row = np.array([world.row_of[i] for i in search.item_ids])  # served row -> world row
    trendy = np.array([drift.colour in title_words(t) for t in search.served.items.frame["title"]])

    rng = np.random.default_rng(args.seed)
    draws = [world.draw(rng) for _ in range(args.requests)]
    tokenizer = load_item_table(resolve_ref(load_version(version)[1]["tokenizer"], version))
    users = user_context(training_events(catalog), tokenizer, world.user_ids[[u for _, u in draws]],
                         np.full(len(draws), np.iinfo(np.int64).max)).features()
    got = np.zeros((len(draws), len(bonuses)))
    trend_shown = np.zeros((len(draws), len(bonuses)))
    for start in tqdm(range(0, len(draws), args.batch), desc="searches", unit="batch"):
        rows = range(start, min(start + args.batch, len(draws)))
        photos = [world.photo(draws[r][0]) for r in rows]
        vis = search.encode([path for path, _ in photos])
        res = search.searcher.search(search.prompts(vis.tokens, vis.embedding, [users[r] for r in rows]),
                                     beam=args.beam, k=args.pool)
        for j, r in enumerate(rows):
            keep = res.items[j] >= 0
            items, score = res.items[j][keep], res.item_scores[j][keep]
            user, photographed = draws[r][1], photos[j][1]
            for b, bonus in enumerate(bonuses):
                top = items[np.argsort(-(score + bonus * trendy[items]), kind="stable")[:K]]
                got[r, b] = expected_orders(world, user, photographed, world_row[top])
                trend_shown[r, b] = trendy[top].mean()

    follows = world.trend[[u for _, u in draws]]
    rows_out = []
    for b, bonus in enumerate(bonuses):
        diff = got[:, b] - got[:, 0]
        rows_out.append({"bonus": bonus, "orders_per_1k": round(1000 * float(got[:, b].mean()), 2),
                         "minus_served_per_1k": round(1000 * float(diff.mean()), 2), "interval_95": interval(diff),
                         "followers_minus_served_per_1k": round(1000 * float(diff[follows].mean()), 2),
                         "others_minus_served_per_1k": round(1000 * float(diff[~follows].mean()), 2),
                         "trend_share_of_shown": round(float(trend_shown[:, b].mean()), 4)})
        print(f"bonus {bonus:5.1f}: {rows_out[-1]}", flush=True)
    best = max(rows_out, key=lambda r: r["orders_per_1k"])
    report = {"world": str(catalog.root), "model": f"{version.parent.name}/{version.name}",
              "drift": drift.model_dump(exclude={"trend_users", "repriced"}), "requests": len(draws),
              "followers": int(follows.sum()), "beam": args.beam, "pool": args.pool, "list_size": K,
              "trend_items_served": int(trendy.sum()), "bonuses": rows_out, "best_bonus": best["bonus"]}
    path = write_report(args, "bench_trend_bonus.json", report)
    plot(rows_out, path.with_suffix(".png"))
    print(f"best bonus {best['bonus']:g} ({best['minus_served_per_1k']:+.1f} per 1,000) -> {path}")


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["bonus"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [r["minus_served_per_1k"] for r in rows], "o-", label="all shoppers")
    ax.fill_between(x, [r["interval_95"][0] for r in rows], [r["interval_95"][1] for r in rows], alpha=0.2)
    ax.plot(x, [r["followers_minus_served_per_1k"] for r in rows], "--", label="the trend's shoppers")
    ax.plot(x, [r["others_minus_served_per_1k"] for r in rows], ":", label="the others")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("bonus for the trend's word (served score units)")
    ax.set_ylabel("expected orders per 1,000 vs served")
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
