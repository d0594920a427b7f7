"""Catalog changes under load: the shop's next catalog version (launches, removals, price changes,
`onevision world next-version`) is published to the running service with `onevision catalog
publish` while 16 clients search, and reported:
- failed requests (any status but 200) over the whole run;
- how long until every replica and the ingress had applied the changes;
- answers holding a removed item among the requests sent after that (must be none);
- launched items found by their own catalog photo: HR@4 per variant over one search of each, sent
  from the moment every replica applied the changes or 60 s after publishing began, whichever
  comes first (an item not applied by then is a miss; the load keeps running; with `--after`
  under 60 s, only once everything is applied);
- when each batch of records was out (`onevision catalog publish` sends removals and updates
  without a new photo first, then the new photos 16 at a time as they are encoded);
- exposures of repriced items after the changes: the share carrying the new price;
- the launched items' events (clicks sent with the answers' feedback tokens): dead-lettered or not.
Everything runs for real on this machine: its own broker and Redis, the workers, the Ray Serve
app with the default experiment (OneVision, MCA, MCA without ranking). Writes
<--out>/bench_catalog_changes.json and .png.

    python bench/catalog_changes.py                        # the small world: 100 / 10 / 50
    python bench/catalog_changes.py --smoke --out /tmp/b   # the tiny world: 12 / 3 / 5, 4 clients
"""

from __future__ import annotations

import os
import platform
import random
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import requests
from common import embedded_services, ensure_models, options, parse, save_figure, write_report

SMOKE = {"adds": 12, "removes": 3, "price_changes": 5, "concurrency": 4, "warmup": 5.0, "after": 20.0, "port": 0}
HIT_AT = 4
FOUND_WITHIN_S = 60.0  # launched items must be found this long after publishing began (issue 26)


class Load:
    """`concurrency` clients searching photos of the base catalog, the launched items and the removed
    ones, as random shoppers; every answer is kept with its send time. A launched item found is
    clicked through /v1/events (as the trusted load generator: the API key)."""

    def __init__(self, url: str, photos: list[tuple[str, str, bytes]], concurrency: int, seed: int, key: str):
        self.url, self.photos, self.concurrency, self.seed = url, photos, concurrency, seed
        self.headers = {"X-API-Key": key}  # a trusted load generator: the per-client rate limit spares it
        self.answers: list[dict] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(concurrency)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _client(self, i: int) -> None:
        rng = random.Random(self.seed * 1000 + i)
        with requests.Session() as s:
            while not self.stop.is_set():
                kind, item, data = rng.choice(self.photos)
                user = f"bench-{rng.randrange(500)}"
                t0 = time.time()
                try:
                    r = s.post(f"{self.url}/v1/search", files={"image": ("p.jpg", data, "image/jpeg")},
                               data={"user_id": user, "top_k": "10"}, headers=self.headers, timeout=120)
                    status, body = r.status_code, (r.json() if r.status_code == 200 else {})
                except requests.RequestException as exc:
                    status, body = 0, {"error": str(exc)}
                shown = [h["item_id"] for h in body.get("items", [])]
                self.answers.append({"t": t0, "done": time.time(), "status": status, "kind": kind, "item": item,
                                     "variant": body.get("variant"), "items": shown})
                if kind == "launched" and item in shown:
                    s.post(f"{self.url}/v1/events", json={"type": "click", "item_id": item, "user_id": user,
                                                          "request_id": body["request_id"],
                                                          "position": shown.index(item), "scene": "image_search",
                                                          "variant": body["variant"]},
                           headers=self.headers, timeout=30)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(180)


def applied_everywhere(url: str, n: int) -> bool:
    """Every replica (its `onevision_replica_catalog_changes`) and the ingress have read `n` records."""
    health = requests.get(f"{url}/healthz", timeout=30).json()
    metrics = requests.get(f"{url}/metrics", timeout=30).text
    replicas = [float(v) for v in re.findall(r"^onevision_replica_catalog_changes\{[^}]*\} (\S+)$", metrics, re.M)]
    return bool(replicas) and min(replicas) >= n and health["catalog"]["ingress_position"] >= n


def variant_users(n: int = 400) -> dict[str, list[str]]:
    """Shoppers the default experiment routes to each variant."""
    from serving.experiments import DEFAULT_EXPERIMENTS, ExperimentConfig, Router

    router, out = Router(ExperimentConfig.load(DEFAULT_EXPERIMENTS)), {}
    for k in range(n):
        out.setdefault(router.assign(f"sweep-{k}").variant, []).append(f"sweep-{k}")
    return out


def sweep(url: str, photos: list[tuple[str, bytes]], users: list[str], key: str) -> list[bool]:
    """Each launched item's catalog photo searched once (as one variant's shoppers): found in the top 4?"""
    found = []
    with requests.Session() as s:
        for k, (item, data) in enumerate(photos):
            r = s.post(f"{url}/v1/search", files={"image": ("p.jpg", data, "image/jpeg")},
                       data={"user_id": users[k % len(users)], "top_k": str(HIT_AT)}, headers={"X-API-Key": key},
                       timeout=120)
            found.append(r.status_code == 200 and item in [h["item_id"] for h in r.json()["items"]])
    return found


def plot(report: dict, answers: list[dict], t_pub: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for kind, colour in (("launched", "C2"), ("removed", "C3"), ("base", "C0")):
        rows = [a for a in answers if a["kind"] == kind and a["status"] == 200]
        t = np.asarray([a["t"] - t_pub for a in rows])
        hit = np.asarray([a["item"] in a["items"][:HIT_AT] for a in rows], float)
        if len(t):
            bins = np.arange(t.min(), t.max() + 5, 5)
            which = np.digitize(t, bins)
            xs = [bins[b - 1] for b in sorted(set(which))]
            axes[0].plot(xs, [hit[which == b].mean() for b in sorted(set(which))], marker=".", color=colour,
                         label=f"{kind} item's photo")
    applied = report["applied_after_s"]
    for ax in axes:
        ax.axvline(0, color="k", lw=0.8)
        if applied is not None:
            ax.axvline(applied, color="grey", lw=0.8, ls="--")
    axes[0].set(title=f"share of answers with the photo's item in the top {HIT_AT} (5 s bins)",
                xlabel="seconds after publishing (dashed: applied everywhere)", ylim=(-0.05, 1.05))
    axes[0].legend()
    t = np.asarray([a["done"] - t_pub for a in answers])
    lat = np.asarray([a["done"] - a["t"] for a in answers])
    axes[1].scatter(t, lat, s=3, alpha=0.4)
    axes[1].set(title=f"latency of every search ({report['requests']['failed']} failed)", xlabel="seconds",
                ylabel="s")
    save_figure(fig, path)


def main() -> None:
    ap = options(__doc__, work="catalog_changes")
    ap.add_argument("--adds", type=int, default=100)
    ap.add_argument("--removes", type=int, default=10)
    ap.add_argument("--price-changes", dest="price_changes", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of load before publishing")
    ap.add_argument("--after", type=float, default=90.0, help="seconds of load after publishing")
    ap.add_argument("--port", type=int, default=8310, help="the service's HTTP port (0: a free one)")
    ap.add_argument("--seed", type=int, default=1, help="which next version of the world")
    args = parse(ap, SMOKE)

    from infra.process import free_port
    from onevision.catalog.format import load_catalog
    from onevision.registry import load_version, resolve, resolve_ref
    from onevision.world.next_version import NextVersion, next_version
    from serving.ab_report import read_events
    from serving.access import local_api_key
    from serving.launch import start_service, stop_service
    from serving.models import default_model
    from streaming.catalog_stream import publish_diff
    from streaming.launch import start_workers, stop_workers
    from streaming.status import worker_liveness

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ensure_models(args, mca=True)
    base = load_catalog(args.catalog)
    work = args.work.resolve()
    got = next_version(base.root, work / "next", NextVersion(args.adds, args.removes, args.price_changes, 2,
                                                             args.seed))
    new = load_catalog(work / "next")
    generator = resolve(default_model(base.name), args.registry)
    tokenizer = resolve_ref(load_version(generator)[1]["tokenizer"], generator)
    items_new, items_old = new.items.set_index("item_id"), base.items.set_index("item_id")
    launched = [(i, (new.root / items_new.at[i, "image"]).read_bytes()) for i in got["added"]]
    rng = random.Random(args.seed)
    base_photos = [("base", q.target_item_id, (base.root / q.image).read_bytes())
                   for q in base.queries[base.queries["split"] == "test"].sample(200, random_state=args.seed,
                                                                                  replace=True).itertuples()]
    photos = (base_photos + [("launched", i, d) for i, d in launched]
              + [("removed", i, (base.root / items_old.at[i, "image"]).read_bytes()) for i in got["removed"]] * 3)
    rng.shuffle(photos)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with embedded_services(work / "state") as settings:
        try:
            start_workers(settings, tokenizer)
            start_service(settings, base.root, args.registry, port)
            key = local_api_key(settings)
            load = Load(url, photos, args.concurrency, args.seed, key)
            load.start()
            time.sleep(args.warmup)
            t_pub = time.time()
            sent: list[tuple[float, dict]] = []  # (when, counts so far) after each batch the broker took
            failed: list[BaseException] = []

            def publish() -> None:
                try:
                    publish_diff(settings, base.root, new.root, args.registry, progress=False,
                                 on_sent=lambda c: sent.append((time.time(), c)))
                except BaseException as err:  # raised in the main thread, after the load stops
                    failed.append(err)

            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            applied: list[float] = []  # when every replica and the ingress had every record

            def watch() -> None:
                while not applied and time.time() - t_pub < args.after:
                    if sent and not publisher.is_alive() and applied_everywhere(url, sum(sent[-1][1].values())):
                        applied.append(time.time())
                    time.sleep(0.5)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            t_sweep = t_swept = None
            swept: dict[str, list[bool]] = {}
            while time.time() - t_pub < args.after:
                if t_sweep is None and (applied or time.time() - t_pub >= FOUND_WITHIN_S):
                    users = variant_users()  # everything applied, or the time allowed is up: what is found now?
                    t_sweep = time.time()
                    swept = {v: sweep(url, launched, u, key) for v, u in sorted(users.items())}
                    t_swept = time.time()
                time.sleep(0.5)
            publisher.join()
            watcher.join()
            load.finish()
            if failed:
                raise failed[0]
            counts = sent[-1][1]
            t_applied = applied[0] if applied else None
            time.sleep(3)
            events = read_events(settings)
            workers = worker_liveness(settings)
        finally:
            stop_service(settings)
            stop_workers(settings)

    answers = load.answers
    removed = set(got["removed"])
    after = [a for a in answers if t_applied is not None and a["t"] >= t_applied]
    new_price = {i: float(items_new.at[i, "price"]) for i in got["repriced"]}
    exposed = [e for e in events if e["type"] == "exposure" and e["item_id"] in new_price
               and t_applied is not None and e["ts"] / 1000 >= t_applied]
    feature_worker = next((w for w in workers if w["role"] == "features"), {"stats": {}})
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "published": counts, "publish_s": round(sent[-1][0] - t_pub, 2),
        "published_after_s": [{"s": round(t - t_pub, 2), **c} for t, c in sent],  # batch by batch
        "applied_after_s": round(t_applied - t_pub, 2) if t_applied else None,
        "requests": {"total": len(answers), "failed": sum(a["status"] != 200 for a in answers),
                     "failed_by_status": {str(k): sum(a["status"] == k for a in answers)
                                          for k in sorted({a["status"] for a in answers} - {200})},
                     "after_applied": len(after)},
        "removed_in_answers_after_applied": sum(bool(removed & set(a["items"])) for a in after),
        # searched from min(applied everywhere, FOUND_WITHIN_S after publishing began): unapplied ones are misses
        "launched_found_at_4": {v: round(float(np.mean(f)), 4) for v, f in swept.items()} if swept else None,
        "launched_sweep_started_after_s": round(t_sweep - t_pub, 2) if t_sweep else None,
        "launched_sweep_s": round(t_swept - t_sweep, 2) if t_sweep and t_swept else None,
        "launched_found_at_4_under_load": round(float(np.mean(
            [a["item"] in a["items"][:HIT_AT] for a in after if a["kind"] == "launched"] or [np.nan])), 4),
        "repriced_exposures_after_applied": len(exposed),
        "repriced_exposures_with_new_price": sum(abs((e["price"] or 0) - new_price[e["item_id"]]) < 1e-6
                                                 for e in exposed),
        "feature_worker": {k: feature_worker["stats"].get(k) for k in ("applied", "dlq", "catalog_items",
                                                                      "catalog_refused")},
        "latency_s": {"p50": round(float(np.percentile([a["done"] - a["t"] for a in answers], 50)), 3),
                      "p99": round(float(np.percentile([a["done"] - a["t"] for a in answers], 99)), 3)},
    }
    path = write_report(args, "bench_catalog_changes.json", report)
    plot(report, answers, t_pub, path.with_suffix(".png"))
    removed_after = report["removed_in_answers_after_applied"]
    print(f"{report['requests']['total']} requests, {report['requests']['failed']} failed; applied everywhere "
          f"{report['applied_after_s']} s after publishing; removed items in {removed_after} answers after that; "
          f"launched found at 4: {report['launched_found_at_4']} (searched from "
          f"{report['launched_sweep_started_after_s']} s after publishing began); repriced exposures with the new "
          f"price {report['repriced_exposures_with_new_price']}/{report['repriced_exposures_after_applied']}")


if __name__ == "__main__":
    main()
