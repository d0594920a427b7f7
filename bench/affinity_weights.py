"""How the searcher's personalization terms score at other weights: one weight swept at a time
on one split, everything else as served (`searcher_for` defaults), so a weight is chosen on val
and only then scored on test.

    python bench/affinity_weights.py --catalog data/worlds/small --term category --split val

Prints HR@1/4 and MRR@10 of the click, order and pooled sets per weight, and writes
reports/bench_affinity_<term>_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from onevision.catalog.format import load_catalog
from onevision.eval.generative import evaluate_generator, searcher_for
from onevision.generator.model import OneVisionGenerator
from onevision.registry import resolve, trained_run
from serving.models import default_model
from onevision.generator.data import data_for_version
from common import data_options

TERMS = {"category": "category_weight", "price": "price_weight"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_options(ap)
    ap.add_argument("--term", choices=sorted(TERMS), default="category")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--reports", type=Path, default=Path("reports"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    catalog = load_catalog(args.catalog)
    version = trained_run(resolve(args.registry / default_model(args.catalog)))
    data = data_for_version(catalog, version, args.cache, progress=False)
    model = OneVisionGenerator.load(version)
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
    out = args.reports / f"bench_affinity_{args.term}_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
