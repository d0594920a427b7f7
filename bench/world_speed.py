"""Benchmark: how fast the synthetic world generates (items/s), per preset.

    python bench/world_speed.py --preset large          # the 100k-item world
    python bench/world_speed.py --preset small --seed 3
    python bench/world_speed.py --smoke --out /tmp/bench  # the tiny preset, a few seconds

Builds into a scratch directory (deleted afterwards unless --keep) and writes
<--out>/bench_world_<preset>.json.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from common import options, parse, write_report

from onevision.world.build import build_world
from onevision.world.config import preset

SMOKE = {"preset": "tiny"}


def main() -> None:
    ap = options(__doc__, data=False)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="build here and keep it")
    args = parse(ap, SMOKE)

    cfg = preset(args.preset, seed=args.seed, workers=args.workers)
    scratch = Path(tempfile.mkdtemp(prefix="onevision-world-"))
    out = args.keep or scratch / args.preset
    t0 = time.perf_counter()
    s = build_world(cfg, out, force=True)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    result = {
        "preset": args.preset, "seed": args.seed, "n_items": s.n_items, "n_users": s.n_users,
        "n_events": s.n_events, "n_queries": s.n_queries, "n_images": s.n_images,
        "seconds": round(seconds, 1), "items_per_second": round(s.n_items / seconds, 1),
        "images_per_second": round(s.n_images / seconds, 1), "bytes_on_disk": size,
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))
    write_report(args, f"bench_world_{args.preset}.json", result)


if __name__ == "__main__":
    main()
