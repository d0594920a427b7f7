"""Cold items: how well items launched after training are found, against items seen in training.

The world's next catalog version (`onevision world next-version`: new families from the world's
own generator, with shopper photos) is applied to the served generator and to the cascade the
way the service applies it (`catalog publish` -> records -> `apply_changes`), then searched
in-process by a cold-start shopper (no features: the items' own effect, not the shopper's):
- launched items: their shopper photos (test queries of the new version) and their catalog photo;
- seen items: the base catalog's test-split shopper photos, all of them and those that show the
  bought item itself (as every launch photo does; the rest show a family sibling).
HR@1/HR@4 per set and model (the hit: the query's target, or any item it accepts). Writes
<--out>/bench_cold_items.json.

    python bench/cold_items.py                        # the small world, 100 launches x 2 photos
    python bench/cold_items.py --smoke --out /tmp/b   # the tiny world, 12 launches
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
from common import ensure_models, options, parse, write_report

SMOKE = {"adds": 12, "seen": 40, "beam": 16}


def hits(answers, targets: list[list[str]], at: int) -> float:
    return float(np.mean([bool(set(t) & {h.item_id for h in a.hits[:at]}) for a, t in zip(answers, targets)]))


def main() -> None:
    ap = options(__doc__, work="cold_items")
    ap.add_argument("--adds", type=int, default=100, help="items launched")
    ap.add_argument("--photos", type=int, default=2, help="shopper photos of each launched item")
    ap.add_argument("--seen", type=int, default=0, help="seen-item test photos to sample (0: all)")
    ap.add_argument("--beam", type=int, default=256, help="beam width (serving's default)")
    ap.add_argument("--seed", type=int, default=1, help="which next version of the world")
    args = parse(ap, SMOKE)

    from onevision.baselines.mca_search import CascadeSearch
    from onevision.catalog.changes import fold
    from onevision.catalog.format import load_catalog
    from onevision.generator.image_search import ImageSearch
    from onevision.registry import load_version, resolve, resolve_ref
    from onevision.tokenizers.encode_items import NewItemEncoder, changes_between
    from onevision.world.next_version import NextVersion, next_version
    from serving.models import default_model

    ensure_models(args, mca=True)
    base = load_catalog(args.catalog)
    got = next_version(base.root, args.work / "next", NextVersion(args.adds, 0, 0, args.photos, args.seed))
    new = load_catalog(args.work / "next")
    generator = resolve(default_model(base.name), args.registry)
    tokenizer = resolve_ref(load_version(generator)[1]["tokenizer"], generator)
    changes = changes_between(base, new, NewItemEncoder(tokenizer), ts=0)
    states = fold(changes)
    models = {"onevision": ImageSearch.from_registry(generator, base),
              "mca": CascadeSearch.from_registry(resolve(default_model(base.name, "mca"), args.registry), base)}
    apply_s = {}
    for name, m in models.items():
        t0 = time.perf_counter()
        m.apply_changes(states)
        apply_s[name] = round(time.perf_counter() - t0, 3)

    launched = new.queries[new.queries["target_item_id"].isin(got["added"])]
    test = base.queries[base.queries["split"] == "test"]
    if args.seen:
        test = test.sample(min(args.seen, len(test)), random_state=args.seed)
    own = test[test["photo_item_id"] == test["target_item_id"]] if "photo_item_id" in test.columns else test
    items = new.items.set_index("item_id")
    sets = {
        "launched_shopper_photos": ([new.root / p for p in launched["image"]],
                                    [[t] for t in launched["target_item_id"]]),
        "launched_catalog_photos": ([new.root / items.at[i, "image"] for i in got["added"]],
                                    [[i] for i in got["added"]]),
        "seen_shopper_photos": ([base.root / p for p in test["image"]], [list(t) for t in test["target_item_ids"]]),
        "seen_shopper_photos_of_the_item": ([base.root / p for p in own["image"]],
                                            [list(t) for t in own["target_item_ids"]]),
    }
    results: dict[str, dict] = {}
    for name, model in models.items():
        results[name] = {}
        for s, (photos, targets) in sets.items():
            answers = []
            for start in range(0, len(photos), 32):
                answers += model.search(photos[start:start + 32], beam=args.beam, k=10)
            results[name][s] = {"n": len(photos), "HR@1": round(100 * hits(answers, targets, 1), 2),
                                "HR@4": round(100 * hits(answers, targets, 4), 2)}
            print(f"{name:<10} {s:<34} n={len(photos):>5}  HR@1 {results[name][s]['HR@1']:6.2f}  "
                  f"HR@4 {results[name][s]['HR@4']:6.2f}", flush=True)
    gen = results["onevision"]
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "launched": len(got["added"]), "catalog_items": len(new.items), "apply_changes_s": apply_s,
        "results": results,
        "gap_hr4_points": round(gen["seen_shopper_photos_of_the_item"]["HR@4"]
                                - gen["launched_shopper_photos"]["HR@4"], 2),
    }
    write_report(args, "bench_cold_items.json", report)


if __name__ == "__main__":
    main()
