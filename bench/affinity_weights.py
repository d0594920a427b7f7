"""How the searcher's personalization terms score at other weights, and its look-ahead with
fewer of the photo's nearest items (`--term neighbours`, `generator.decode.lookahead`): one
setting swept at a time on one split, everything else as served (`searcher_for` defaults), so a
value is chosen on val and only then scored on test.

    python bench/affinity_weights.py --catalog data/worlds/small --term category --split val
    python bench/affinity_weights.py --catalog data/worlds/small --term neighbours --values 5000 1024 256 64
    python bench/affinity_weights.py --smoke --out /tmp/bench   # the tiny world, weights 0 and 2, beam 4

Prints HR@1/4 and MRR@10 of the click, order and pooled sets per value (and the seconds its
searches took), and writes <--out>/bench_affinity_<term>_<split>.json.
"""

from __future__ import annotations

import time

from common import options, parse, served_generator, write_report

from onevision.eval.generative import evaluate_generator, searcher_for

TERMS = {"category": "category_weight", "price": "price_weight", "neighbours": "lookahead_neighbours"}
DEFAULTS = {"category": [0.0, 1.0, 2.0, 3.0, 4.0], "price": [0.0, 1.0, 2.0, 3.0, 4.0],
            "neighbours": [100_000.0, 1024.0, 256.0, 64.0]}  # 100k: every item of a catalog that size (exact)
SMOKE = {"beam": 4}
SMOKE_VALUES = {"category": [0.0, 2.0], "price": [0.0, 2.0], "neighbours": [256.0, 8.0]}


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--term", choices=sorted(TERMS), default="category")
    ap.add_argument("--weights", "--values", dest="weights", type=float, nargs="+", default=None,
                    help="the values swept (whole numbers of neighbours with --term neighbours; default per term: "
                    + "; ".join(f"{t} {' '.join(f'{v:g}' for v in vs)}" for t, vs in DEFAULTS.items()) + ")")
    ap.add_argument("--split", default="val")
    ap.add_argument("--beam", type=int, default=10)
    args = parse(ap, SMOKE)
    args.weights = args.weights or (SMOKE_VALUES if args.smoke else DEFAULTS)[args.term]
    t0 = time.perf_counter()
    _, version, data, model = served_generator(args, progress=False)
    ex, q = data.evaluation(args.split)
    rows = []
    for w in args.weights:
        value = int(w) if args.term == "neighbours" else w
        searcher = searcher_for(model, data, **{TERMS[args.term]: value})
        t1 = time.perf_counter()
        sets = evaluate_generator(model, data, ex, q["kind"].to_numpy(), beam=args.beam, searcher=searcher)["sets"]
        rows.append({"weight": value, "search_seconds": round(time.perf_counter() - t1, 2),
                     **{name: {k: (round(100 * v, 2) if k != "n" else v) for k, v in m.items()}
                        for name, m in sets.items()}})
        print(f"{args.term} {value:g}: " + "  ".join(
            f"{name} HR@1 {rows[-1][name]['HR@1']:.2f} HR@4 {rows[-1][name]['HR@4']:.2f} "
            f"MRR@10 {rows[-1][name]['MRR@10']:.2f}" for name in ("click", "order", "all")))
    report = {"catalog": str(args.catalog), "generator": str(version), "term": args.term, "split": args.split,
              "beam": args.beam, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    write_report(args, f"bench_affinity_{args.term}_{args.split}.json", report)


if __name__ == "__main__":
    main()
