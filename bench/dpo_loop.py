"""Closed-loop benchmark of near-streaming DPO: one A/B variant serves the continuously updated
model, the other the same starting model frozen, both fed by the traffic simulator.

Everything runs for real on this machine: its own embedded broker and Redis, the feature and
session workers, the Ray Serve app with a two-variant experiment (`frozen` pinned to v0001 of a
private copy of the generator, `live` following its CURRENT), the `train dpo-stream` job
publishing gated versions to that copy, and the simulator's shoppers. Reported:
- orders per thousand requests per variant over time (per window and cumulative), and over
  the whole run with a 95% bootstrap interval and the p-value of live against frozen (requests
  are randomized between the variants by default, `--unit request`, so that which shoppers
  land in which variant does not weigh on the comparison of two models);
- freshness: for every session an accepted version trained on, the time from its last event
  (the purchase) to the moment serving reported that version live (/healthz, polled each second);
- the job's versions: accepted, rejected, examples, gate scores.
Writes <--out>/bench_dpo_loop.json and <--out>/bench_dpo_loop.png.

    python bench/dpo_loop.py --catalog data/worlds/small --duration 1200
    python bench/dpo_loop.py --smoke --out /tmp/bench   # the tiny world, 12 s of traffic at 2/s, micro-batches of 4
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import requests
import yaml
from common import embedded_services, ensure_models, options, parse, save_figure, write_report

MODEL = "generator-dpo-loop"
SMOKE = {"duration": 12.0, "rate": 2.0, "concurrency": 2, "port": 0, "window": 5.0, "session_idle": 2.0,
         "micro_batch": 4, "max_wait": 2.0, "steps": 1}


def private_registry(registry: Path, catalog_name: str, root: Path) -> Path:
    """A registry holding one model: the catalog's current generator as v0001 (its tokenizer is
    referenced where it is, so nothing else is copied)."""
    from onevision.registry import load_version, publish, resolve
    from serving.models import default_model

    src = resolve(default_model(catalog_name), registry)
    manifest, config = load_version(src)
    config["tokenizer"] = (str(Path(config["tokenizer"]).resolve()) if Path(config["tokenizer"]).exists()
                           else config["tokenizer"])
    shutil.rmtree(root, ignore_errors=True)
    files = {n: src / n for n in manifest["files"] if n != "config.json"}
    publish(root, MODEL, files, config, manifest["metrics"], parent=f"{src.parent.name}/{src.name}")
    return root


def nan_if_none(p: float | None) -> float:
    """A p-value for the report and its plot: NaN where too few units gave none."""
    return float("nan") if p is None else p


def newest_lift(registry: Path, rows: list[dict]) -> dict | None:
    """The fit and top words of the title lift (what sells now) of the job's newest accepted version."""
    from onevision.registry import load_version

    accepted = [r for r in rows if r["status"] == "accepted"]
    if not accepted:
        return None
    return load_version(registry / MODEL / accepted[-1]["version"])[0]["metrics"].get("title_lift")


def experiments_file(path: Path, unit: str) -> Path:
    path.write_text(yaml.safe_dump({
        "default_variant": "frozen",
        "variants": [{"name": "frozen", "model": MODEL, "version": "v0001"}, {"name": "live", "model": MODEL}],
        "layers": [{"name": "model", "experiments": [{"key": "dpo-loop", "variants": ["frozen", "live"],
                                                      "hash_attribute": f"{unit}_id"}]}]}))
    return path


def watch_health(url: str, stop: threading.Event, seen: dict[str, float]) -> None:
    """version of the live variant -> when serving first reported it."""
    while not stop.wait(1.0):
        try:
            live = requests.get(f"{url}/healthz", timeout=5).json()["variants"]["live"].split("/")[-1]
            seen.setdefault(live, time.time())
        except (requests.RequestException, KeyError, ValueError):
            pass


def windows(events: list[dict], t0: float, width_s: float) -> dict:
    """Per variant: requests and orders per window of `width_s` seconds, by the exposure's time."""
    first: dict[str, tuple[str, int]] = {}
    orders: dict[str, int] = {}
    for e in events:
        rid = e.get("request_id")
        if e["type"] == "exposure" and rid not in first:
            first[rid] = (e["variant"], int((e["ts"] / 1000 - t0) // width_s))
        elif e["type"] == "order":
            orders[rid] = orders.get(rid, 0) + 1
    out: dict[str, dict[int, list[int]]] = {}
    for rid, (variant, w) in first.items():
        row = out.setdefault(variant, {}).setdefault(w, [0, 0])
        row[0] += 1
        row[1] += orders.get(rid, 0)
    return {v: {"window": sorted(ws), "requests": [ws[w][0] for w in sorted(ws)],
                "orders": [ws[w][1] for w in sorted(ws)]}
            for v, ws in out.items()}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = report["config"]["window_s"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for variant, w in sorted(report["windows"].items()):  # frozen, live: the same colours every run
        minutes = (np.asarray(w["window"]) + 1) * width / 60
        req, orders = np.asarray(w["requests"], float), np.asarray(w["orders"], float)
        axes[0].plot(minutes, 1000 * orders / np.maximum(req, 1), marker="o", label=variant)
        axes[1].plot(minutes, 1000 * np.cumsum(orders) / np.maximum(np.cumsum(req), 1), label=variant)
    for t in report["accepted_served_min"]:
        axes[1].axvline(t, color="#ccc", lw=0.6, zorder=0)
    axes[0].set(title=f"orders / 1k requests per {width:.0f} s window", xlabel="minutes")
    axes[1].set(title=f"cumulative (p = {report['p_value_live_vs_frozen']:.3g}); grey: a new version served",
                xlabel="minutes")
    for ax in axes:
        ax.legend()
    save_figure(fig, path)


def main() -> None:
    ap = options(__doc__, work="dpo_loop")  # --work: the private registry and the services' state
    ap.add_argument("--duration", type=float, default=1200.0, help="seconds of traffic (the issue allows 20 minutes)")
    ap.add_argument("--rate", type=float, default=8.0, help="searches a second")
    ap.add_argument("--concurrency", type=int, default=12)
    ap.add_argument("--port", type=int, default=8300, help="the service's HTTP port (0: a free one)")
    ap.add_argument("--unit", choices=("request", "user"), default="request",
                    help="what is randomized between the variants: requests (every shopper sees both models, so "
                         "the comparison is free of between-shopper variance) or shoppers")
    ap.add_argument("--window", type=float, default=120.0, help="seconds per point of the curves")
    ap.add_argument("--session-idle", type=float, default=5.0, help="seconds without events that close a session")
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--max-wait", type=float, default=10.0)
    ap.add_argument("--catch-up-batch", type=int, default=128,
                    help="examples a version may take when sessions are already waiting (= --micro-batch: off)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drift", default=None, help="a drift scenario of the world (onevision world build --drift): "
                                                  "trend, price-shock or launches, built here when missing")
    ap.add_argument("--trend-share", type=float, default=None,
                    help="with --drift trend: the share of shoppers who follow it, for this run only (the world's "
                         "folder is left as it is; default: the scenario as built)")
    args = parse(ap, SMOKE)

    from infra.process import free_port
    from onevision.catalog.format import load_catalog
    from onevision.registry import load_version, resolve_ref
    from serving.ab_report import per_unit, read_events, summarize
    from serving.access import local_api_key
    from serving.launch import start_service, stop_service
    from serving.simulator import ShopperWorld, publish_drift, run_traffic
    from streaming.launch import start_workers, stop_workers
    from streaming.producer import EventProducer
    from training.dpo_stream import job_versions
    from training.launch import start_dpo_job, stop_dpo_job

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM still stops every process this started
    ensure_models(args)
    catalog = load_catalog(args.catalog)
    drift = None
    if args.drift:
        from onevision.world.drift import build_drift, drift_path, load_drift

        if args.trend_share is not None:
            if args.drift != "trend":
                ap.error("--trend-share needs --drift trend")
            drift = build_drift(catalog.root, "trend", write=False, share=args.trend_share)
        else:
            drift = load_drift(catalog.root, args.drift) if drift_path(catalog.root, args.drift).is_file() \
                else build_drift(catalog.root, args.drift)
    work = args.work.resolve()
    registry = private_registry(args.registry, catalog.name, work / "registry")
    start = registry / MODEL / "v0001"
    tokenizer = resolve_ref(load_version(start)[1]["tokenizer"], start)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    stop, seen = threading.Event(), {}
    with embedded_services(work / "state") as settings:
        try:
            start_workers(settings, tokenizer, session_idle_s=args.session_idle)
            start_service(settings, catalog.root, registry, port,
                          experiments=experiments_file(work / "experiments.yaml", args.unit))
            start_dpo_job(settings, catalog.root, registry, MODEL, args.cache,
                          {"micro_batch": args.micro_batch, "max_wait_s": args.max_wait,
                           "catch_up_batch": args.catch_up_batch, "steps": args.steps,
                           "lr": args.lr, "beta": args.beta, "seed": args.seed})
            print(f"services up; {args.duration:.0f} s of traffic at {args.rate}/s", flush=True)
            threading.Thread(target=watch_health, args=(url, stop, seen), daemon=True).start()
            producer = EventProducer(settings)
            world = ShopperWorld.load(catalog, drift)
            world.start()
            publish_drift(settings, catalog.root, world, registry, MODEL)  # a drift's catalog change, on time
            t0 = world.t0
            stats = run_traffic(url, world, producer, args.rate, args.duration, seed=args.seed,
                                concurrency=args.concurrency, api_key=local_api_key(settings))
            producer.close()
            time.sleep(3)
            stop.set()
            events = read_events(settings, "dpo-loop")
            rows = job_versions(registry, MODEL, "onevision-dpo")
        finally:
            stop.set()
            stop_dpo_job(settings)
            stop_service(settings)
            stop_workers(settings)

    summary = summarize(per_unit(events, args.unit), control="frozen", unit=args.unit,
                        weights={"frozen": 0.5, "live": 0.5})  # the experiment splits evenly: the SRM check
    live = summary["variants"].get("live", {})
    fresh = []
    for r in rows:
        served = seen.get(r["version"])
        if r["status"] == "accepted" and served is not None:
            fresh += [served - ts / 1000 for ts in r["stream"]["session_end_ts"]]
    report = {
        "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "window_s": args.window},
        "drift": drift.model_dump(exclude={"trend_users", "repriced"}) if drift is not None else None,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "traffic": {"requests": stats.requests, "errors": stats.errors, "clicks": stats.clicks, "orders": stats.orders},
        "variants": {v: {"requests": s["requests"], "orders": s["orders"], "orders_per_1k": s["orders_per_1k"]}
                     for v, s in summary["variants"].items()},
        "p_value_live_vs_frozen": nan_if_none(live.get("orders_per_1k", {}).get("p_value_vs_control")),
        "live_beats_frozen": bool(live and live["orders_per_1k"]["value"]
                                  > summary["variants"]["frozen"]["orders_per_1k"]["value"]),
        "verdict": summary["verdict"], "sample_ratio": summary["sample_ratio"],
        "freshness_s": {"sessions": len(fresh), **({"p50": round(float(np.percentile(fresh, 50)), 1),
                                                   "p90": round(float(np.percentile(fresh, 90)), 1)} if fresh else {})},
        "title_lift": newest_lift(registry, rows),
        "versions": [{"version": r["version"], "status": r["status"], "parent": r["parent"],
                      "examples": r["stream"]["examples"], "sessions": r["stream"]["sessions"],
                      "caught_up": r["stream"].get("caught_up"),  # examples taken beyond a micro-batch: it was behind
                      "skipped_nonfinite": r["stream"]["skipped_nonfinite"], "gate": r["metrics"].get("gate"),
                      "seconds": r["stream"].get("seconds"),  # update / lift / gate: what bounds the job's pace
                      "served_after_s": round(seen[r["version"]] - t0, 1) if r["version"] in seen else None}
                     for r in rows],
        "accepted_served_min": [round((seen[r["version"]] - t0) / 60, 2) for r in rows
                                if r["status"] == "accepted" and r["version"] in seen],
        "windows": windows(events, t0, args.window),
    }
    path = write_report(args, "bench_dpo_loop.json", report)
    plot(report, path.with_suffix(".png"))
    for v, s in report["variants"].items():
        o = s["orders_per_1k"]
        print(f"{v:<7} {s['requests']:>6} requests  orders/1k {o['value']:.1f} "
              f"[{o['ci95'][0]:.1f}, {o['ci95'][1]:.1f}]")
    if report["title_lift"]:
        print(f"what sells now, learned by the live variant's newest version: {report['title_lift'].get('top')}")
    print(f"p (live vs frozen) = {report['p_value_live_vs_frozen']:.4f}; freshness {report['freshness_s']}; "
          f"{sum(r['status'] == 'accepted' for r in rows)} accepted / {len(rows)} versions")
    print(f"-> {path}, {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
