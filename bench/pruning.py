"""Pruning benchmark (OneVision 3.3, Figure 5): visual tokens kept vs accuracy, latency, memory.

Variants, all from the same teacher (the trained run behind the served generator):
- `unpruned`: the teacher, every visual token (V_max);
- `kl+curriculum@k` for each k of `--keeps`: the recipe of `train distill` (eq. 11 + eq. 12);
- at `--v-sub`, the ablations: `pruned only` (the teacher's weights, tokens pruned at inference),
  `ntp` (pruned from the first epoch, fine-tuned on the targets' loss: neither distillation nor
  curriculum) and `kl` (distilled, no curriculum).
Per variant:
- HR@4 / MRR@4 on the test split's shopper photos (beam 10, request-time user features);
- end-to-end latency at `--beam` (photo bytes in, ranked items out: `ImageSearch.search`, one
  query at a time, one torch thread), the variants taking turns query by query so that they share
  the machine's noise; the median per variant;
- peak memory: a fresh process per variant loads it, warms up at beam 1, resets the kernel's
  peak-RSS mark (/proc/self/clear_refs) and answers a serving batch of `--memory-batch` photos at
  `--beam`; its VmHWM is the peak, and VmHWM minus the RSS before the search is the search's
  working memory.
Students are trained under `--work` and reused by later runs. Writes <--out>/bench_pruning.json
and a PNG shaped like the paper's Figure 5.

    python bench/pruning.py --catalog data/worlds/small
    python bench/pruning.py --smoke --out /tmp/bench    # the tiny world: keep 2, one short epoch, beam 8
"""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
import time
from argparse import SUPPRESS
from pathlib import Path

import numpy as np
import torch
from common import options, parse, save_figure, served_generator, write_report

from onevision.catalog.format import load_catalog
from onevision.eval.generative import evaluate_generator, searcher_for
from onevision.generator.image_search import ImageSearch
from onevision.generator.model import OneVisionGenerator
from onevision.registry import read_version, resolve_ref
from training.distill import distill, preset_config

SMOKE = {"preset": "tiny", "keeps": "2", "v_sub": 2, "epochs": 1, "max_examples": 32, "beam": 8,
         "latency_queries": 3, "memory_batch": 2}


def users_at_request(catalog, tokenizer: Path, q) -> list[dict]:
    """Each query's user features as the feature store would have served them at its time."""
    from onevision.behaviour.backfill import user_context
    from onevision.catalog.history import training_events
    from onevision.items import load_item_table

    return user_context(training_events(catalog), load_item_table(tokenizer), q["user_id"].to_numpy(),
                        q["ts"].to_numpy()).features()


def tokenizer_of(version: Path) -> Path:
    return resolve_ref(read_version(version)[1]["tokenizer"], version)


def status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child_memory(args) -> None:
    """In a fresh process: the peak RSS of answering a serving batch of photos at the beam with
    one variant (run with a fixed mmap threshold, so that freed tensors leave the RSS and the
    peak mark sees live memory, not the allocator's cache)."""
    torch.set_num_threads(args.threads)
    catalog = load_catalog(args.catalog)
    search = ImageSearch.from_registry(Path(args.teacher), catalog)
    search.searcher.model = OneVisionGenerator.load(args.child_memory,
                                                    json.loads((Path(args.child_memory) / "config.json").read_text()))
    q = catalog.queries[catalog.queries["split"] == "test"].head(args.memory_batch)
    photos = [(args.catalog / p).read_bytes() for p in q["image"]]
    users = users_at_request(catalog, tokenizer_of(Path(args.teacher)), q)
    search.search(photos, users, beam=1)  # libraries and lazy buffers, not the beam's working memory
    before = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark restarts at the current RSS
    search.search(photos, users, beam=args.beam)
    print(json.dumps({"peak_rss_mb": status_kb("VmHWM") / 1024, "rss_before_mb": before / 1024,
                      "working_mb": (status_kb("VmHWM") - before) / 1024}))


def measure_memory(args, folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--catalog", str(args.catalog), "--teacher", str(args.teacher),
                          "--child-memory", str(folder), "--beam", str(args.beam), "--threads", str(args.threads),
                          "--memory-batch", str(args.memory_batch)], capture_output=True, text=True, check=True,
                         env={**os.environ, "TQDM_DISABLE": "1", "MALLOC_MMAP_THRESHOLD_": "131072"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    sweep = sorted([r for r in rows if r["kind"] in ("unpruned", "kl+curriculum")], key=lambda r: -r["keep"])
    x = [r["keep"] for r in sweep]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(x, [r["test"]["HR@4"] for r in sweep], "o-", label="HR@4 (distilled, curriculum)")
    a.plot(x, [r["test"]["MRR@4"] for r in sweep], "s-", label="MRR@4 (distilled, curriculum)")
    ablations = [r for r in rows if r["kind"] not in ("unpruned", "kl+curriculum")]
    for i, (r, marker) in enumerate(zip(ablations, "^vD")):  # side by side at V_sub, so none hides another
        a.plot([r["keep"] + 0.3 * (i + 1)], [r["test"]["HR@4"]], marker, ms=8, label=f"HR@4, {r['name']}")
    a.invert_xaxis()
    a.set(xlabel="visual tokens kept", ylabel="points (test split, beam 10)", title="accuracy")
    a.legend(fontsize=7)
    base = sweep[0]
    b.plot(x, [r["latency_p50_ms"] / base["latency_p50_ms"] for r in sweep], "o-", label="latency p50 (relative)")
    b.plot(x, [r["memory"]["peak_rss_mb"] / base["memory"]["peak_rss_mb"] for r in sweep], "s-",
           label="peak RSS (relative)")
    b.plot(x, [r["memory"]["working_mb"] / max(base["memory"]["working_mb"], 1e-9) for r in sweep], "^-",
           label="queries' working memory (relative)")
    b.axhline(0.8, ls=":", c="grey", lw=1)
    b.invert_xaxis()
    b.set(xlabel="visual tokens kept", ylabel="vs unpruned", title=f"cost at beam {report['beam']}")
    b.legend(fontsize=7)
    fig.suptitle(f"visual-token pruning on {report['catalog']} (V_max {base['keep']})")
    save_figure(fig, path)


def main() -> None:
    ap = options(__doc__, work="pruning")
    ap.add_argument("--preset", default="small", help="the distillation preset (training.distill)")
    ap.add_argument("--keeps", default="12,8,5,3", help="kept-token counts of the distilled sweep")
    ap.add_argument("--v-sub", type=int, default=3, help="where the ablations are trained")
    ap.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: --preset's)")
    ap.add_argument("--max-examples", type=int, default=None, help="distillation examples (default: --preset's)")
    ap.add_argument("--beam", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-queries", type=int, default=60)
    ap.add_argument("--memory-batch", type=int, default=16, help="photos per search in the memory measurement "
                                                                   "(serving's batch size)")
    ap.add_argument("--teacher", help=SUPPRESS)
    ap.add_argument("--child-memory", help=SUPPRESS)
    args = parse(ap, SMOKE)
    if args.child_memory:
        return child_memory(args)

    torch.set_num_threads(2)
    catalog, args.teacher, data, teacher = served_generator(args)
    v_max = teacher.tokens.n_visual
    overrides = {k: v for k, v in (("epochs", args.epochs), ("max_examples", args.max_examples)) if v}
    variants: list[tuple[str, str, int, OneVisionGenerator, dict]] = [("unpruned", "unpruned", v_max, teacher, {})]
    plan = [(f"kl+curriculum@{k}", "kl+curriculum", k, {"keep": k}) for k in map(int, args.keeps.split(","))]
    plan += [(f"ntp, no curriculum@{args.v_sub}", "ntp", args.v_sub,
              {"keep": args.v_sub, "loss": "ntp", "curriculum": False}),
             (f"kl, no curriculum@{args.v_sub}", "kl", args.v_sub, {"keep": args.v_sub, "curriculum": False})]
    for name, kind, keep, opts in plan:
        cfg = preset_config(args.preset, **overrides, **opts)
        t0 = time.perf_counter()
        student, log = distill(teacher, data, cfg,
                               args.work / args.teacher.name / name.replace(" ", "_").replace(",", ""))
        print(f"{name}: schedule {log['keep_schedule']}, {time.perf_counter() - t0:.0f}s", flush=True)
        variants.append((name, kind, keep, student,
                         {"schedule": log["keep_schedule"], "train_seconds": round(log["seconds"], 1)}))
    pruned = copy.deepcopy(teacher)
    pruned.visual_keep = args.v_sub
    variants.append((f"pruned only@{args.v_sub}", "pruned only", args.v_sub, pruned, {}))

    test, q = data.evaluation("test")
    kinds = q["kind"].to_numpy()
    rows = []
    searcher = searcher_for(teacher, data)  # trie and item tables built once; each variant searches with it
    for name, kind, keep, model, extra in variants:
        sets = evaluate_generator(model, data, test, kinds, beam=10, searcher=searcher)["sets"]
        rows.append({"name": name, "kind": kind, "keep": keep, **extra,
                     "test": {k: round(100 * sets["all"][k], 2) for k in ("HR@4", "MRR@4")},
                     "test_by_set": {s: {k: round(100 * sets[s][k], 2) for k in ("HR@4", "MRR@4")}
                                     for s in ("click", "order")}})
        print(name, rows[-1]["test"], flush=True)

    # latency: image bytes in, ranked items out, the variants taking turns query by query
    torch.set_num_threads(args.threads)
    search = ImageSearch.from_registry(args.teacher, catalog)
    lq = catalog.queries[catalog.queries["split"] == "test"].head(args.latency_queries)
    photos = [(args.catalog / p).read_bytes() for p in lq["image"]]
    users = users_at_request(catalog, tokenizer_of(args.teacher), lq)
    times = {name: [] for name, *_ in variants}
    for i, (photo, user) in enumerate(zip(photos, users)):
        turn = variants[i % len(variants):] + variants[:i % len(variants)]
        for name, _, _, model, _ in turn:
            search.searcher.model = model
            t0 = time.perf_counter()
            search.search([photo], [user], beam=args.beam, k=10)
            if i:  # the first query warms every variant up
                times[name].append((time.perf_counter() - t0) * 1000)
    for row in rows:
        t = np.asarray(times[row["name"]])
        row["latency_p50_ms"], row["latency_p90_ms"] = (round(float(np.median(t)), 2),
                                                        round(float(np.percentile(t, 90)), 2))

    # memory: a fresh process per variant
    for row, (name, _, _, model, _) in zip(rows, variants):
        folder = args.work / args.teacher.name / "models" / name.replace(" ", "_").replace(",", "")
        model.save(folder)
        (folder / "config.json").write_text(json.dumps(model.config()))
        row["memory"] = {k: round(v, 1) for k, v in measure_memory(args, folder).items()}
        print(name, f"p50 {row['latency_p50_ms']} ms", row["memory"], flush=True)

    base = rows[0]
    for row in rows:
        row["latency_vs_unpruned"] = round(row["latency_p50_ms"] / base["latency_p50_ms"], 3)
        row["peak_rss_vs_unpruned"] = round(row["memory"]["peak_rss_mb"] / base["memory"]["peak_rss_mb"], 4)
        row["hr4_vs_unpruned"] = round(row["test"]["HR@4"] - base["test"]["HR@4"], 2)
    report = {"machine": platform.node(), "cpus": os.cpu_count(), "catalog": catalog.name, "teacher": str(args.teacher),
              "beam": args.beam, "threads": args.threads, "v_max": v_max, "v_sub": args.v_sub,
              "test_queries": len(test), "latency_queries": len(photos) - 1, "variants": rows}
    plot(report, write_report(args, "bench_pruning.json", report).with_suffix(".png"))


if __name__ == "__main__":
    main()
