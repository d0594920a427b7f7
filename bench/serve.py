"""Serving benchmark: the Ray Serve app under load, batching on vs off, and its overhead over the
bare model call, side by side in one run on the same photos and users.

1. Load: `--requests` searches (test-split shopper photos, their users) at `--concurrency`
   through HTTP: errors, p50/p99 latency, queries/s.
2. Batching: `--compare-requests` searches at concurrency 16 against the app with
   `@serve.batch` (max 16) and redeployed with batches of 1: queries/s of each.
3. Overhead: one request at a time through HTTP (parse, Feast features, routing, model, exposure
   logging) vs `ImageSearch.search` called in this process on the same photo, same user features
   and beam: median of each, alternating the two.
4. Redis outage: `--outage-clients` clients search while the embedded Redis is stopped for
   `--redis-down-s`: every answer must be a 200 (cold-start features, `degraded`), none a 5xx.
Each load phase also counts the CPU every process on the machine spent on it, per request, by
role (the model replica, the ingress, Serve's HTTP proxy, this client, the rest): only the model's
share can shrink with batching, and CPU per request over the cores bounds the queries/s.
Needs the broker and Redis (`onevision infra up`; started here, tied to this process, when they
do not answer; --smoke starts its own) and a trained generator. Writes <--out>/bench_serve.json.

    python bench/serve.py --catalog data/worlds/small
    python bench/serve.py --smoke --out /tmp/bench     # the tiny world, 16 searches at beam 8, a free port
"""

from __future__ import annotations

import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import requests
from common import embedded_services, ensure_models, options, parse, write_report

SMOKE = {"requests": 16, "concurrency": 4, "compare_requests": 8, "overhead_repeats": 3, "beam": 8, "port": 0,
         "redis_down_s": 3.0}


def load(url: str, photos: list[tuple[bytes, str]], n: int, concurrency: int) -> dict:
    """n searches at `concurrency`, cycling over the photos."""
    local = threading.local()  # one keep-alive session per client thread

    def one(i: int) -> tuple[float, int]:
        s = local.session = getattr(local, "session", None) or requests.Session()
        data, user = photos[i % len(photos)]
        t0 = time.perf_counter()
        try:
            r = s.post(f"{url}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                       data={"user_id": user, "top_k": "10"}, timeout=120)
            status = r.status_code
        except requests.RequestException:
            status = -1
        return time.perf_counter() - t0, status

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in results]) * 1000
    errors = sum(r[1] != 200 for r in results)
    return {"requests": n, "concurrency": concurrency, "errors": int(errors), "seconds": round(wall, 2),
            "qps": round(n / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1)}


ROLES = (("SearchModel", "model"), ("Ingress", "ingress"), ("ProxyActor", "http_proxy"))


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """(role, CPU seconds so far) of every process on the machine, by pid."""
    out = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd, t = " ".join(p.info["cmdline"] or []), p.cpu_times()
        except psutil.Error:
            continue
        role = "client" if p.pid == os.getpid() else next((r for key, r in ROLES if key in cmd), "other")
        out[p.pid] = (role, t.user + t.system)
    return out


def measured_load(url: str, photos: list[tuple[bytes, str]], n: int, concurrency: int) -> dict:
    """`load`, plus the ms of CPU per request each role spent and the cores kept busy."""
    before = cpu_seconds()
    result = load(url, photos, n, concurrency)
    by_role: dict[str, float] = {}
    for pid, (role, seconds) in cpu_seconds().items():
        by_role[role] = by_role.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    result["cpu_ms_per_request"] = {r: round(1000 * s / n, 2) for r, s in sorted(by_role.items())}
    result["cpu_ms_per_request"]["total"] = round(1000 * sum(by_role.values()) / n, 2)
    result["cores_busy"] = round(sum(by_role.values()) / result["seconds"], 2)
    return result


def stage_means(url: str) -> dict:
    """Mean ms per request of each stage the ingress measures and the mean model batch size it
    saw (its /metrics histograms, cumulative since the app started)."""
    sums, counts = {}, {}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        for metric, key in (("onevision_request_seconds", None), ("onevision_model_batch_size", "batch_size")):
            for part, store in (("_sum", sums), ("_count", counts)):
                if line.startswith(metric + part):
                    name, value = line.rsplit(" ", 1)
                    store[key or name.split('stage="')[1].split('"')[0]] = float(value)
    return {k: round((1 if k == "batch_size" else 1000) * sums[k] / counts[k], 2) for k in sums if counts.get(k)}


def outage_load(url: str, photos: list[tuple[bytes, str]], settings, down_s: float, clients: int,
                own_services: bool) -> dict:
    """Searches from `clients` threads while the embedded redis-server is stopped for `down_s`
    (and a few seconds either side): the answers by status, and how many were degraded."""
    from collections import Counter

    from infra import services as svc

    if not settings.redis.embedded:
        return {"skipped": "an external Redis is not ours to stop"}
    redis_proc, results, stop = svc.redis_server(settings), [], threading.Event()

    def client(i: int) -> None:
        with requests.Session() as s:
            n = 0
            while not stop.is_set():
                data, user = photos[(i + n * clients) % len(photos)]
                n += 1
                try:
                    r = s.post(f"{url}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                               data={"user_id": user, "top_k": "10"}, timeout=120)
                    results.append((r.status_code, r.status_code == 200 and r.json()["degraded"]))
                except requests.RequestException:
                    results.append((-1, False))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2)
    redis_proc.stop()
    t0 = time.perf_counter()
    time.sleep(down_s)
    during = len(results)
    redis_proc.start(60, tie_to_parent=own_services)  # the services `infra up` started must outlive the bench
    down = time.perf_counter() - t0
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(120)
    statuses = Counter(status for status, _ in results)
    return {"down_s": round(down, 1), "clients": clients, "requests": len(results),
            "status_5xx": sum(n for status, n in statuses.items() if status >= 500),
            "failed": sum(n for status, n in statuses.items() if status != 200),
            "degraded": sum(d for _, d in results), "answered_while_down": during,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--compare-requests", type=int, default=320)
    ap.add_argument("--overhead-repeats", type=int, default=41)
    ap.add_argument("--beam", type=int, default=256)
    ap.add_argument("--port", type=int, default=8000, help="HTTP port (0: a free one)")
    ap.add_argument("--redis-down-s", type=float, default=10.0, help="phase 4: how long Redis is stopped")
    ap.add_argument("--outage-clients", type=int, default=4, help="phase 4: searching clients meanwhile")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="the model's threads, in the service and in the bare call")
    args = parse(ap, SMOKE)
    ensure_models(args, mca=True)  # the app's default experiment serves OneVision and MCA
    with embedded_services(configured=not args.smoke) as settings:
        report = measure(args, settings)
    write_report(args, "bench_serve.json", report)


def measure(args, settings) -> dict:
    """The three phases against the app on `settings`' broker and Redis."""
    import ray
    import torch
    from ray import serve

    from features.client import feature_store, user_features
    from infra.process import free_port
    from onevision.catalog.format import load_catalog
    from onevision.generator.image_search import ImageSearch
    from onevision.images import load_rgb
    from onevision.registry import resolve
    from serving.app import build
    from serving.models import default_model

    catalog = load_catalog(args.catalog)
    q = catalog.queries[catalog.queries["split"] == "test"]
    photos = [((args.catalog / img).read_bytes(), user) for img, user in zip(q["image"], q["user_id"])]
    unlimited = {"rate_limit": "1000000/minute", "read_rate_limit": "1000000/minute"}  # one address drives all load
    served = settings.model_copy(update={"api": settings.api.model_copy(update=unlimited)})
    app_args = {"catalog": str(args.catalog), "registry": str(args.registry), "beam": args.beam,
                "settings": served.private_dump(), "torch_threads": args.torch_threads}

    port = args.port or free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    report: dict = {"machine": platform.node(), "cpus": os.cpu_count(), "beam": args.beam,
                    "catalog": catalog.name}
    try:
        serve.run(build(app_args), name="onevision", route_prefix="/")
        load(url, photos, 32, 8)  # warm-up
        report["load"] = measured_load(url, photos, args.requests, args.concurrency)
        print("load", report["load"], flush=True)
        before = stage_means(url)
        batched = measured_load(url, photos, args.compare_requests, 16)
        batched["stages_after"], batched["stages_before"] = stage_means(url), before

        # overhead: HTTP one at a time vs the bare model call in this process, alternating
        torch.set_num_threads(args.torch_threads)
        search = ImageSearch.from_registry(resolve(args.registry / default_model(args.catalog)), catalog)
        store = feature_store(settings)
        http_ms, bare_ms = [], []
        with requests.Session() as s:
            for i in range(args.overhead_repeats):
                data, user = photos[i % len(photos)]
                t0 = time.perf_counter()
                r = s.post(f"{url}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                           data={"user_id": user, "top_k": "10"}, timeout=120)
                http_ms.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
                features = user_features(store, [user])[0]
                t0 = time.perf_counter()
                search.search([load_rgb(data)], [features], beam=args.beam, k=10)
                bare_ms.append((time.perf_counter() - t0) * 1000)
        report["overhead"] = {"http_p50_ms": round(float(np.median(http_ms[1:])), 1),
                              "bare_model_p50_ms": round(float(np.median(bare_ms[1:])), 1)}
        report["overhead"]["ratio"] = round(report["overhead"]["http_p50_ms"]
                                            / report["overhead"]["bare_model_p50_ms"], 3)
        report["overhead"]["ingress_stage_mean_ms"] = stage_means(url)  # over every request so far
        print("overhead", report["overhead"], flush=True)

        report["redis_outage"] = outage_load(url, photos, settings, args.redis_down_s, args.outage_clients,
                                             own_services=args.smoke)
        print("redis outage", report["redis_outage"], flush=True)

        serve.run(build({**app_args, "max_batch_size": 1}), name="onevision", route_prefix="/")
        load(url, photos, 16, 8)
        unbatched = measured_load(url, photos, args.compare_requests, 16)
        unbatched["stages"] = stage_means(url)
        # the most batching could give here: every core busy at the batched CPU per request
        ceiling = os.cpu_count() * 1000 / batched["cpu_ms_per_request"]["total"]
        report["batching"] = {"batched": batched, "unbatched": unbatched,
                              "speedup": round(batched["qps"] / unbatched["qps"], 2),
                              "qps_all_cores_busy": round(ceiling, 1),
                              "speedup_all_cores_busy": round(ceiling / unbatched["qps"], 2)}
        print("batching", report["batching"], flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return report


if __name__ == "__main__":
    main()
