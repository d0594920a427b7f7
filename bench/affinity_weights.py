"""How the searcher's personalization terms score at other weights: one weight swept at a time
on one split, everything else as served (`searcher_for` defaults), so a weight is chosen on val
and only then scored on test.

    python bench/affinity_weights.py --catalog data/worlds/small --term category --split val
    python bench/affinity_weights.py --smoke --out /tmp/bench   # the tiny world, weights 0 and 2, beam 4

Prints HR@1/4 and MRR@10 of the click, order and pooled sets per weight, and writes
<--out>/bench_affinity_<term>_<split>.json.
"""

from __future__ import annotations

import time

from common import options, parse, served_generator, write_report

from onevision.eval.generative import evaluate_generator, searcher_for

TERMS = {"category": "category_weight", "price": "price_weight"}
SMOKE = {"weights": [0.0, 2.0], "beam": 4}


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--term", choices=sorted(TERMS), default="category")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--beam", type=int, default=10)
    args = parse(ap, SMOKE)
    t0 = time.perf_counter()
    _, version, data, model = served_generator(args, progress=False)
    ex, q = data.evaluation(args.split)
    rows = []
    for w in args.weights:
        searcher = searcher_for(model, data, **{TERMS[args.term]: w})
        sets = evaluate_generator(model, data, ex, q["kind"].to_numpy(), beam=args.beam, searcher=searcher)["sets"]
        rows.append({"weight": w, **{name: {k: (round(100 * v, 2) if k != "n" else v) for k, v in m.items()}
                                      for name, m in sets.items()}})
        print(f"{args.term} weight {w:g}: " + "  ".join(
            f"{name} HR@1 {rows[-1][name]['HR@1']:.2f} HR@4 {rows[-1][name]['HR@4']:.2f} "
            f"MRR@10 {rows[-1][name]['MRR@10']:.2f}" for name in ("click", "order", "all")))
    report = {"catalog": str(args.catalog), "generator": str(version), "term": args.term, "split": args.split,
              "beam": args.beam, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    write_report(args, f"bench_affinity_{args.term}_{args.split}.json", report)


if __name__ == "__main__":
    main()
