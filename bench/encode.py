"""Benchmark: batch encoding on Ray Data against the single-process encoder, on the same images.

    python bench/encode.py                                    # the small world's 26,000 images
    python bench/encode.py --catalog data/worlds/tiny         # its 510 images
    python bench/encode.py --limit 3000 --encoder data/registry/encoder-tiny   # any aligned V will do
    python bench/encode.py --smoke --out /tmp/bench           # the tiny world, its first 128 images

The images are the generator's image bank (`onevision.generator.data.bank_paths`: item images, views,
query photos), the first --limit of them. The single-process encoder is `visual_tokens.encode_files`
(what `image_bank` runs), at torch's default threads and at one thread; Ray Data is `training.encode_batch.encode_paths`
(a local Ray of N CPUs, N actors with one torch thread each) writing its shards into a scratch
folder (--work, emptied first, so every run encodes every image). Both timings include loading V;
Ray's also its actors' start, not `ray.init` (both reported apart, with the rate after the first
batch came back: the actors' steady rate). The encoder is --encoder, else the catalog's CURRENT
one in --registry, else one aligned briefly (the tiny recipe) into --work.
Writes <--out>/bench_encode.json: items/s of each, side by side, and the max abs difference of
the embeddings and the (float16) tokens against the single-process encoder at its default threads.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import options, parse, write_report

SMOKE = {"limit": 128, "chunk": 64}


def encoder_version(args, catalog) -> Path:
    from onevision.catalog.format import catalog_fingerprint
    from onevision.registry import current_for_catalog, resolve
    from training.tokenizer import ensure_encoder, recipe

    if args.encoder is not None:
        return resolve(args.encoder)
    version = current_for_catalog(args.registry, f"encoder-{catalog.name}", catalog_fingerprint(catalog))
    if version is None:
        print(f"no encoder for {catalog.name} in {args.registry}: aligning one (tiny recipe) into {args.work}",
              flush=True)
        version, _ = ensure_encoder(catalog, args.work / "registry", recipe("tiny").align, progress=False)
    return version


def main() -> None:
    ap = options(__doc__, work="encode")
    ap.add_argument("--workers", default="1,2", help="Ray actor counts to run, comma-separated")
    ap.add_argument("--chunk", type=int, default=512, help="images per Parquet shard")
    ap.add_argument("--limit", type=int, default=0, help="encode only the first N images (0: all)")
    ap.add_argument("--encoder", type=Path, default=None,
                    help="an aligned encoder's registry version (default: the catalog's CURRENT one, else aligned)")
    args = parse(ap, SMOKE)

    import torch

    from onevision.catalog.format import load_catalog
    from onevision.encoders.aligned import AlignedEfficientNet
    from onevision.encoders.visual_tokens import encode_files
    from onevision.generator.data import bank_paths
    from training.encode_batch import BATCH, encode_paths, read_shards

    if args.smoke and not args.catalog.exists():
        from onevision.world.build import build_world
        from onevision.world.config import preset

        print(f"smoke: building the tiny world in {args.catalog}", flush=True)
        build_world(preset("tiny"), args.catalog, progress=False)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    catalog = load_catalog(args.catalog)
    version = encoder_version(args, catalog)
    paths = bank_paths(catalog)
    paths = paths[: args.limit] if args.limit else paths
    print(f"{len(paths)} images of {catalog.name}, encoder {version}", flush=True)

    singles = {}
    default_threads = torch.get_num_threads()
    for threads in dict.fromkeys((default_threads, 1)):  # as `image_bank` runs it, then on one core like an actor
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        singles[threads] = encode_files(AlignedEfficientNet.load(version), [catalog.path(p) for p in paths],
                                        progress=False), time.perf_counter() - t0
    ref = singles[default_threads][0]

    def diff(got) -> dict[str, float]:
        return {"max_abs_diff_embedding": float(np.abs(got.embedding - ref.embedding).max()),
                "max_abs_diff_tokens": float(np.abs(got.tokens.astype(np.float32)
                                                    - ref.tokens.astype(np.float32)).max())}

    rows: list[dict[str, Any]] = [{"runner": "single process", "workers": 1, "torch_threads": threads,
                                   "seconds": round(seconds, 2), "items_per_second": round(len(paths) / seconds, 1),
                                   **diff(got)} for threads, (got, seconds) in singles.items()]
    for row in rows:
        print(f"single process, {row['torch_threads']} torch threads: {row['items_per_second']} items/s", flush=True)
    torch.set_num_threads(default_threads)
    for n in (int(w) for w in args.workers.split(",")):
        out = args.work / f"ray-{n}"
        run = encode_paths(catalog.root, paths, version, out, workers=n, chunk=args.chunk, progress=False)
        got = read_shards(out, run.n_shards)
        rows.append({"runner": "ray data", "workers": n, "torch_threads": 1, "seconds": run.seconds,
                     "items_per_second": run.items_per_second, "ray_start_seconds": run.ray_start_seconds,
                     "first_output_seconds": run.first_output_seconds,
                     # the rate once the actors are up: every image after the first batch over the time after it
                     "items_per_second_after_first_output": round((len(paths) - BATCH) / (run.seconds
                                                                  - run.first_output_seconds), 1)
                     if len(paths) > BATCH and run.seconds > run.first_output_seconds else None,
                     "shards": run.n_shards, **diff(got)})
        print(f"ray data, {n} workers: {run.items_per_second} items/s, max abs diff embedding "
              f"{rows[-1]['max_abs_diff_embedding']:.2e}, tokens {rows[-1]['max_abs_diff_tokens']:.2e}", flush=True)
    report = {"catalog": catalog.name, "encoder": str(version), "n_images": len(paths), "chunk": args.chunk,
              "rows": rows, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "pass": all(r["max_abs_diff_embedding"] < 1e-4 for r in rows)}
    shutil.rmtree(args.work, ignore_errors=True)
    print("\n".join(f"{r['runner']:>14} x{r['workers']} ({r['torch_threads']} threads): "
                    f"{r['items_per_second']:>6} items/s "
                    f"(after the first batch: {r.get('items_per_second_after_first_output') or '-'}), "
                    f"max abs diff {r['max_abs_diff_embedding']:.1e} / {r['max_abs_diff_tokens']:.1e}" for r in rows))
    write_report(args, "bench_encode.json", report)


if __name__ == "__main__":
    main()
