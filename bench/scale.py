"""Costs as the catalog grows: synthetic catalogs of 10k, 100k and 1M items with SIDs in the
paper's codebook (2048/512/256 | 256/256) and 256-d unit embeddings that follow their SIDs (each
level's codeword adds a finer direction, as residual quantization reads them).

Each size runs in a process of its own, so its memory is its own:
- the SID trie: build seconds and bytes;
- the items' ANN index (`onevision.ann.ItemIndex`: exact up to 20k items, HNSW beyond): build
  seconds, bytes, top-256 query ms per photo and recall@10 against exact search;
- a serving replica's search (`ImageSearch`: a `small` generator with random weights, the
  searcher with its trie, index and look-ahead, the prompt's nearest-item hints, encoder V) and
  the catalog's item frame: its resident memory once built and after searching;
- beam-256 search latency for a batch of photos, prompts to ranked items, with and without the
  similarity look-ahead (timed alternately), and the look-ahead's own bonuses;
- the feature worker's catalog state (`ItemTable` with VRQ's 128-d reconstructions and their
  index, the Feast SID bytes per item): its resident memory (the Kafka consumer and Redis client,
  which do not grow with the catalog, are left out).
Then log-log slopes over the sizes and the acceptance figures: latency with the look-ahead at
every size against the smallest (at most 1.5x) and the replica's memory per million items, both
its growth and its total at the largest size (under 2 GB). Writes <--out>/bench_scale.json and .png.

    python bench/scale.py                                   # 10k, 100k, 1M (about 6 minutes on 2 cores)
    python bench/scale.py --sizes 10000,100000,1000000,10000000   # where memory allows
    python bench/scale.py --smoke --out /tmp/bench          # 2k and 6k items (HNSW from 4k), beam 16
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import options, parse, save_figure, timed, write_report

PAPER_SIZES = (2048, 512, 256, 256, 256)
SCALES = (1.0, 0.5, 0.25, 0.12, 0.06)  # each level's codeword length: coarse to fine
DIM, WORKER_DIM, HINTS, N_CATEGORIES = 256, 128, 8, 50
SMOKE = {"sizes": "2000,6000", "exact_up_to": 4000, "beam": 16, "batch": 2, "repeats": 2, "preset": "tiny",
         "recall_photos": 50}


def rss_mb() -> float:
    """This process's resident memory now (not its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def catalog(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 5) SIDs, uniform in the paper's codebook, and (n, 256) unit embeddings: the sum of
    each level's codeword plus a little noise, made in chunks (no n-sized temporaries beyond the result)."""
    rng = np.random.default_rng(seed)
    books = [s * unit(rng.standard_normal((k, DIM))) for k, s in zip(PAPER_SIZES, SCALES)]
    sids = np.stack([rng.integers(0, k, n) for k in PAPER_SIZES], 1)
    emb = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        s = sids[start:start + 100_000]
        x = sum(b[s[:, level]] for level, b in enumerate(books)) + 0.03 * rng.standard_normal((len(s), DIM))
        emb[start:start + len(s)] = unit(x)
    return sids, emb


def recall_at_10(index, emb: np.ndarray, photos: np.ndarray) -> float:
    """The share of each photo's exact 10 nearest items the index returns (exact: faiss's flat search)."""
    from onevision.ann import search

    _, rows = index.search(photos, 10)
    exact = search(emb, photos, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)]))


def measure_replica(n: int, args) -> dict:
    """One size's trie, index, replica and latency figures (run in a process of its own)."""
    import pandas as pd
    import torch

    from onevision.ann import ItemIndex
    from onevision.catalog.served import ServedItems
    from onevision.encoders.aligned import AlignedConfig, AlignedEfficientNet
    from onevision.generator.decode.trie import SIDTrie
    from onevision.generator.image_search import ImageSearch
    from onevision.generator.model import OneVisionGenerator
    from onevision.generator.prompt.builder import PromptTokens
    from onevision.generator.prompt.image_sids import ImageSIDs
    from onevision.items import sid_string
    from onevision.tokenizers.vrq import VRQTokenizer

    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    out: dict = {"items": n}
    base = rss_mb()
    sids, emb = catalog(n)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    trie = SIDTrie(sids, PAPER_SIZES)
    out["trie"] = {"build_s": time.perf_counter() - t0, "bytes": trie.nbytes, "sids": len(trie.sids),
                   "nodes": trie.n_nodes[1:]}
    del trie
    t0 = time.perf_counter()
    index = ItemIndex(emb, exact_up_to=args.exact_up_to)
    out["index"] = {"kind": index.kind, "build_s": time.perf_counter() - t0, "bytes": index.nbytes}
    photos = unit(emb[rng.integers(0, n, args.recall_photos)] + 0.5 / np.sqrt(DIM) * rng.standard_normal(
        (args.recall_photos, DIM)))
    index.search(photos[:1], 256)  # warm
    t0 = time.perf_counter()
    for photo in photos:  # one photo per call: a request's latency, not a batch's throughput
        index.search(photo[None], 256)
    out["index"]["query_ms_per_photo_top256"] = 1000 * (time.perf_counter() - t0) / len(photos)
    out["index"]["recall_at_10"] = recall_at_10(index, emb, photos)
    del emb  # the index holds the one copy from here, as in a replica
    gc.collect()

    # the serving replica: what ImageSearch.from_registry builds, over this catalog
    tokens = PromptTokens(PAPER_SIZES, tuple(f"category {c}" for c in range(N_CATEGORIES)),
                          tuple(f"w{i}" for i in range(2000)), n_hints=HINTS)
    model = OneVisionGenerator(tokens, args.preset, visual_keep=3).eval()
    category = rng.integers(0, N_CATEGORIES, n)
    price = rng.lognormal(3, 1, n)
    items = pd.DataFrame({"item_id": [f"item-{i:09d}" for i in range(n)], "title": [f"w{i % 2000} w{i % 7}"
                                                                                   for i in range(n)],
                          "category": [f"category {c}" for c in category], "price": price,
                          "image": [f"images/item-{i:09d}.jpg" for i in range(n)]})
    items["clicks_30d"] = rng.gamma(1.0, 10.0, n)  # S_conv
    t0 = time.perf_counter()
    image_sids = ImageSIDs(VRQTokenizer(PAPER_SIZES), None, category, np.zeros((N_CATEGORIES, 1)), 4,
                           item_sids=sids, mode="nearest-item", hints=HINTS)
    image_sids.text_of = {f"category {c}": np.zeros(1) for c in range(N_CATEGORIES)}  # no text model loaded
    search = ImageSearch(AlignedEfficientNet(AlignedConfig()), model, ServedItems.of(items, sids, index), image_sids)
    searcher = search.searcher
    out["replica"] = {"build_s": time.perf_counter() - t0}
    gc.collect()
    out["replica"]["rss_mb"] = rss_mb()
    out["replica"]["rss_above_imports_mb"] = out["replica"]["rss_mb"] - base

    b = args.batch
    view = searcher.item_embedding
    query = unit(view[rng.integers(0, n, b)] + 0.5 / np.sqrt(DIM) * rng.standard_normal((b, DIM)))
    grid = rng.standard_normal((b, tokens.n_visual - 1, 320)).astype(np.float32)
    users = [{"short_sids": [sid_string(s) for s in sids[rng.integers(0, n, 5)]],
              "long_sid": sid_string(sids[rng.integers(0, n)]),
              "recent_sids": [sid_string(s) for s in sids[rng.integers(0, n, 8)]]} for _ in range(b)]
    guide = searcher.guide

    def run(with_guide: bool):
        searcher.guide = guide if with_guide else None
        try:
            return searcher.search(search.prompts(grid, query, users), beam=args.beam, k=10)
        finally:
            searcher.guide = guide

    res = timed({"lookahead": lambda: run(True), "plain": lambda: run(False),
                 "bonuses": lambda: guide.bonuses(query, 80.0)}, args.repeats)
    (ahead_s, ahead), (plain_s, _), (bonus_s, _) = res["lookahead"], res["plain"], res["bonuses"]
    out["search"] = {"beam": args.beam, "batch": b, "lookahead_ms": 1000 * ahead_s, "plain_ms": 1000 * plain_s,
                     "bonuses_ms": 1000 * bonus_s, "all_valid": bool(searcher.trie.contains(
                         ahead.sids.reshape(-1, len(PAPER_SIZES))).all()),
                     "results": int((ahead.items >= 0).sum())}
    gc.collect()
    out["replica"]["rss_after_search_mb"] = rss_mb()
    return out


def measure_worker(n: int, exact_up_to: int) -> dict:
    """The feature worker's catalog state: its item table (SIDs, VRQ reconstructions and their
    index, ids) and the Feast SID bytes it writes per item."""
    from features.redis_writer import sid_value
    from onevision.items import ItemTable, ItemVectors

    base = rss_mb()
    rng = np.random.default_rng(2)
    ids = [f"item-{i:09d}" for i in range(n)]
    sids = np.stack([rng.integers(0, k, n) for k in PAPER_SIZES], 1)
    # a reconstruction per SID, shared by the items that carry it (few do at these sizes)
    books = [s * unit(rng.standard_normal((k, WORKER_DIM))) for k, s in zip(PAPER_SIZES, SCALES)]
    vectors = sum(b[sids[:, level]] for level, b in enumerate(books)).astype(np.float32)
    t0 = time.perf_counter()
    table = ItemTable(ids, sids, ItemVectors(vectors, exact_up_to))
    del vectors
    sid_bytes = {item: sid_value(table.sids[i]) for i, item in enumerate(table.item_ids)}
    build = time.perf_counter() - t0
    gc.collect()
    rss = rss_mb()
    t0 = time.perf_counter()
    table.nearest_sids(rng.standard_normal((64, WORKER_DIM)).astype(np.float32))
    assert table.vectors is not None
    return {"build_s": build, "rss_mb": rss, "rss_above_imports_mb": rss - base, "sid_bytes": len(sid_bytes),
            "index": table.vectors.index.kind, "requantize_ms_per_user": 1000 * (time.perf_counter() - t0) / 64}


def slope(xs, ys) -> float | None:
    """The log-log slope of ys over xs (least squares); None with fewer than two positive points."""
    pts = [(np.log(x), np.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    x, y = map(np.array, zip(*pts))
    return float(np.polyfit(x, y, 1)[0])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["items"] for r in rows]
    panels = {
        "search latency, beam %d (ms per batch)" % rows[0]["search"]["beam"]: {
            "with look-ahead": [r["search"]["lookahead_ms"] for r in rows],
            "without": [r["search"]["plain_ms"] for r in rows],
            "look-ahead's bonuses": [r["search"]["bonuses_ms"] for r in rows]},
        "build (s)": {"trie": [r["trie"]["build_s"] for r in rows], "index": [r["index"]["build_s"] for r in rows],
                      "worker's table": [r["worker"]["build_s"] for r in rows]},
        "memory (MB)": {"replica (resident)": [r["replica"]["rss_after_search_mb"] for r in rows],
                        "feature worker (resident)": [r["worker"]["rss_mb"] for r in rows],
                        "index": [r["index"]["bytes"] / 2**20 for r in rows],
                        "trie": [r["trie"]["bytes"] / 2**20 for r in rows]},
        "index query (ms per photo, top 256)": {"query": [r["index"]["query_ms_per_photo_top256"] for r in rows]},
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8))
    for ax, (title, series) in zip(axes, panels.items()):
        for label, ys in series.items():
            ax.plot(n, ys, marker="o", label=label)
        ax.set(xscale="log", yscale="log", title=title, xlabel="catalog items")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    ap = options(__doc__, data=False)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="catalog sizes, comma-separated")
    ap.add_argument("--exact-up-to", type=int, default=None, help="exact index up to this many items "
                    "(default: the service's, onevision.ann.EXACT_UP_TO)")
    ap.add_argument("--beam", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="photos per timed search")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--recall-photos", type=int, default=200)
    ap.add_argument("--preset", default="small", help="the generator's size preset")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # one size, in a process of its own
    ap.add_argument("--part", choices=("replica", "worker"), default="replica", help=argparse.SUPPRESS)
    args = parse(ap, SMOKE)
    if args.exact_up_to is None:
        from onevision.ann import EXACT_UP_TO

        args.exact_up_to = EXACT_UP_TO
    if args.child is not None:  # one size, in its own process: print its figures
        print(json.dumps(measure_replica(args.child, args) if args.part == "replica"
                         else measure_worker(args.child, args.exact_up_to)))
        return
    sizes = sorted(map(int, args.sizes.split(",")))
    if len(sizes) < 2:
        ap.error("--sizes needs at least two catalog sizes: the figures are how costs grow between them")
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        row = json.loads(_child([sys.executable, __file__, *sys.argv[1:], "--child", str(n)]))
        row["worker"] = json.loads(_child([sys.executable, __file__, *sys.argv[1:], "--child", str(n),
                                           "--part", "worker"]))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        s = row["search"]
        print(f"{n:>9,} items: trie {row['trie']['build_s']:6.1f} s {row['trie']['bytes'] / 2**20:7.1f} MB | "
              f"index ({row['index']['kind']}) {row['index']['build_s']:6.1f} s "
              f"{row['index']['bytes'] / 2**20:7.1f} MB "
              f"recall@10 {row['index']['recall_at_10']:.3f} | search {s['lookahead_ms']:7.1f} ms "
              f"(without look-ahead {s['plain_ms']:7.1f}) | replica {row['replica']['rss_after_search_mb']:7.0f} MB "
              f"| worker {row['worker']['rss_mb']:6.0f} MB", flush=True)
    n = [r["items"] for r in rows]
    first, last = rows[0], rows[-1]
    series = {"trie_build_s": [r["trie"]["build_s"] for r in rows], "trie_bytes": [r["trie"]["bytes"] for r in rows],
              "index_build_s": [r["index"]["build_s"] for r in rows],
              "index_bytes": [r["index"]["bytes"] for r in rows],
              "index_query_ms": [r["index"]["query_ms_per_photo_top256"] for r in rows],
              "search_lookahead_ms": [r["search"]["lookahead_ms"] for r in rows],
              "search_plain_ms": [r["search"]["plain_ms"] for r in rows],
              "bonuses_ms": [r["search"]["bonuses_ms"] for r in rows],
              "replica_rss_mb": [r["replica"]["rss_after_search_mb"] for r in rows],
              "worker_rss_mb": [r["worker"]["rss_mb"] for r in rows]}
    per_million = 1e6 * (last["replica"]["rss_after_search_mb"] - first["replica"]["rss_after_search_mb"]) \
        / max(last["items"] - first["items"], 1)
    growth = last["search"]["lookahead_ms"] / first["search"]["lookahead_ms"]
    worst = max(r["search"]["lookahead_ms"] for r in rows) / first["search"]["lookahead_ms"]  # at any size
    report = {"sizes": n, "codebook": list(PAPER_SIZES), "dim": DIM, "beam": args.beam, "batch": args.batch,
              "preset": args.preset, "exact_up_to": args.exact_up_to, "rows": rows,
              "slopes": {k: slope(n, v) for k, v in series.items()},
              "acceptance": {"lookahead_latency_growth": growth, "lookahead_latency_growth_worst": worst,
                             "lookahead_latency_growth_max": 1.5,
                             "replica_rss_largest_mb": last["replica"]["rss_after_search_mb"],
                             "replica_mb_per_million_items": per_million,
                             "replica_gb_per_million_items_max": 2.0,
                             "pass": worst <= 1.5 and per_million < 2048
                             and last["replica"]["rss_after_search_mb"] < 2048 * max(last["items"] / 1e6, 1)},
              "smoke": bool(args.smoke)}
    path = write_report(args, "bench_scale.json", report)
    plot(rows, path.with_suffix(".png"))
    print(f"look-ahead latency x{growth:.2f} from {first['items']:,} to {last['items']:,} items (x{worst:.2f} at "
          f"worst); replica "
          f"{per_million:.0f} MB per million items; slopes " +
          ", ".join(f"{k} {v:.2f}" for k, v in report["slopes"].items() if v is not None))


def _child(cmd: list[str]) -> str:
    """The last line a child process printed (its JSON); its other output passes through."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    return lines[-1]


if __name__ == "__main__":
    main()
