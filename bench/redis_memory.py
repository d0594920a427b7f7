"""Redis under search traffic: what `--requests` searches leave in Redis when no stream worker runs
(so nothing writes features). Request contexts go to Kafka (`streaming.request_log`), so the
searches themselves should add no key and no memory; before, each left a 14 KB context for two days.

Starts its own broker and Redis (no workers), the Serve app on the served generator, measures
Redis `used_memory`, `DBSIZE` and the keys by prefix before and after the searches, and the
requests topic's growth. Writes <--out>/bench_redis_memory.json.

    python bench/redis_memory.py --catalog data/worlds/small --requests 10000
    python bench/redis_memory.py --smoke --out /tmp/bench     # the tiny world, 200 searches
"""

from __future__ import annotations

import time
from collections import Counter

from common import embedded_services, ensure_models, options, parse, write_report
from serve import load

SMOKE = {"requests": 200, "concurrency": 8, "beam": 16}


def redis_state(r) -> dict:
    keys = [k.decode() for k in r.keys("*")]
    prefixes = Counter(":".join(k.split(":")[:2]) for k in keys)
    return {"used_memory": int(r.info("memory")["used_memory"]), "keys": len(keys), "by_prefix": dict(prefixes)}


def topic_records(settings) -> dict:
    from kafka import KafkaConsumer

    from streaming.status import end_offsets

    c = KafkaConsumer(**settings.kafka.client_options())
    try:
        return {"records": sum(end for _, end in end_offsets(c, settings.kafka.requests_topic).values())}
    finally:
        c.close()


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--beam", type=int, default=32, help="the footprint does not depend on it; smaller is faster")
    args = parse(ap, SMOKE)
    ensure_models(args)
    import ray
    from ray import serve

    from infra.process import free_port
    from infra.settings import redis_client
    from onevision.catalog.format import load_catalog
    from serving.app import build

    catalog = load_catalog(args.catalog)
    q = catalog.queries[catalog.queries["split"] == "test"]
    photos = [((args.catalog / img).read_bytes(), user) for img, user in zip(q["image"], q["user_id"])]
    experiments = args.out / "redis_memory_experiments.yaml"
    experiments.parent.mkdir(parents=True, exist_ok=True)
    experiments.write_text("default_variant: onevision\nvariants:\n  - name: onevision\n")
    with embedded_services() as settings:
        unlimited = {"rate_limit": "1000000/minute", "read_rate_limit": "1000000/minute"}
        served = settings.model_copy(update={"api": settings.api.model_copy(update=unlimited)})
        port = free_port()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            serve.run(build({"catalog": str(args.catalog), "registry": str(args.registry), "beam": args.beam,
                             "experiments": str(experiments), "settings": served.private_dump(),
                             "item_stats_s": 0}), name="onevision", route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            load(url, photos, 32, 8)  # warm-up: the replicas' first reads and writes
            time.sleep(2)
            r = redis_client(settings.redis)
            before, topic_before = redis_state(r), topic_records(settings)
            result = load(url, photos, args.requests, args.concurrency)
            time.sleep(3)  # the contexts and exposures go out after the answers
            after, topic_after = redis_state(r), topic_records(settings)
        finally:
            serve.shutdown()
            ray.shutdown()
    report = {"catalog": catalog.name, "requests": args.requests, "beam": args.beam, "load": result,
              "redis_before": before, "redis_after": after,
              "used_memory_ratio": round(after["used_memory"] / before["used_memory"], 4),
              "new_keys": after["keys"] - before["keys"],
              "contexts_on_kafka": topic_after["records"] - topic_before["records"]}
    print({k: v for k, v in report.items() if k not in ("load", "redis_before", "redis_after")}, flush=True)
    write_report(args, "bench_redis_memory.json", report)


if __name__ == "__main__":
    main()
