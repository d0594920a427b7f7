"""Every benchmark in bench/ runs with --smoke (its own code path at tiny sizes) as a subprocess,
exits 0 and writes its JSON, with the keys its readers expect, under a temporary --out.

The benches that read a world and models get the session's tiny world and a private copy of the
registry and feature cache the tiny generator was trained into (a bench that fits what it lacks,
serving's MCA ranker, writes only there); the others need nothing (encode builds the tiny world and
aligns an encoder in its own scratch --data). stream, serve, chaos and dpo_loop start their own broker
and Redis (and Ray Serve): about a minute each on two cores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Bench:
    report: str  # the file it writes under --out
    keys: frozenset[str]  # top-level keys the report must hold
    models: bool = False  # reads the tiny world and its models (--data, --catalog)
    check: Callable[[dict], bool] = lambda report: True
    services: bool = False  # starts its own broker and Redis

    def marks(self) -> list:
        return [pytest.mark.integration, pytest.mark.timeout(420)] if self.services else []


def keys(*names: str) -> frozenset[str]:
    return frozenset(names)


BENCHES = {
    "world_speed": Bench("bench_world_tiny.json", keys("preset", "n_items", "n_events", "seconds", "items_per_second"),
                         check=lambda r: r["preset"] == "tiny" and r["n_items"] > 0),
    "decode": Bench("bench_decode.json", keys("model", "n_sids", "prompt_length", "dict_trie_build_s", "rows"),
                    models=True, check=lambda r: "generator-vrq-tiny" in r["model"] and len(r["rows"]) == 4
                    and all(row["all_valid"] and row["lookahead_all_valid"] for row in r["rows"])),
    "affinity_weights": Bench("bench_affinity_category_val.json", keys("generator", "term", "split", "beam", "rows"),
                              models=True, check=lambda r: [row["weight"] for row in r["rows"]] == [0.0, 2.0]),
    "personalization_headroom": Bench("bench_personalization.json",
                                      keys("order_queries", "hr1_order", "gains_over_no_user", "weights"),
                                      models=True, check=lambda r: len(r["hr1_order"]) == 6),
    "pruning": Bench("bench_pruning.json", keys("teacher", "beam", "v_max", "v_sub", "test_queries", "variants"),
                     models=True, check=lambda r: len(r["variants"]) == 5
                     and all(v["memory"]["peak_rss_mb"] > 0 for v in r["variants"])),
    "stream": Bench("bench_stream.json", keys("events", "bare_consumer_events_per_s", "ours_events_per_s",
                                              "feast_push_per_event_events_per_s", "ours_worker", "freshness", "pass"),
                    services=True,
                    check=lambda r: r["ours_worker"]["applied"] == r["events"] and r["ours_worker"]["dlq"] == 0),
    "serve": Bench("bench_serve.json", keys("beam", "catalog", "load", "overhead", "batching", "redis_outage"),
                   models=True,
                   services=True,
                   check=lambda r: r["load"]["errors"] == 0 and r["batching"]["unbatched"]["errors"] == 0
                   and r["redis_outage"]["failed"] == 0 and r["redis_outage"]["degraded"] > 0),
    # kill -9 (one mid-rebalance), a Redis outage and a broker restart against an undisturbed run
    "chaos": Bench("chaos.json", keys("reference", "kill", "redis_outage", "broker_restart", "lost", "duplicated"),
                   # the embedded broker keeps its topics in memory: what it held is lost on a restart
                   services=True, check=lambda r: all(r["lost"][k] == 0 and r["duplicated"][k] == 0
                                                      for k in ("kill", "redis_outage"))),
    # builds the tiny world and briefly aligns an encoder in its own --data
    "encode": Bench("bench_encode.json", keys("catalog", "encoder", "n_images", "rows", "pass"),
                    check=lambda r: r["pass"] and all(row["items_per_second"] > 0 for row in r["rows"])
                    and [row["workers"] for row in r["rows"] if row["runner"] == "ray data"] == [1, 2]),
    # the GPU run's sections on the CPU: each stage on the device and as the CPU baseline, beam, batching
    "gpu": Bench("bench_gpu.json", keys("smoke", "device", "torch", "train", "beam", "device_audit", "batching",
                                        "errors", "complete"),
                 models=True, check=lambda r: r["complete"] and not r["errors"] and len(r["train"]["rows"]) == 10
                 and all(row["steps"] == 2 for row in r["train"]["rows"]) and r["beam"]["all_valid"]
                 and r["device_audit"]["ok"] and [row["batch"] for row in r["batching"]["rows"]] == [1, 4]),
    # searches leave nothing in Redis (no workers run): the request contexts are on Kafka
    "redis_memory": Bench("bench_redis_memory.json", keys("requests", "redis_before", "redis_after",
                                                          "used_memory_ratio", "new_keys", "contexts_on_kafka"),
                          models=True, services=True,
                          check=lambda r: r["load"]["errors"] == 0 and r["new_keys"] == 0
                          and r["contexts_on_kafka"] == r["requests"]),
    # two synthetic catalogs in the paper's codebook, the larger one past the exact index (HNSW)
    "scale": Bench("bench_scale.json", keys("sizes", "codebook", "rows", "slopes", "acceptance"),
                   check=lambda r: [row["index"]["kind"] for row in r["rows"]] == ["exact", "hnsw"]
                   and all(row["search"]["all_valid"] and row["search"]["results"] > 0
                           and row["index"]["recall_at_10"] > 0.9 for row in r["rows"])
                   and r["slopes"]["search_lookahead_ms"] is not None),
    # the tiny world's next version published under load: nothing failed, nothing removed served
    "catalog_changes": Bench("bench_catalog_changes.json", keys("published", "applied_after_s", "requests",
                                                                "removed_in_answers_after_applied",
                                                                "launched_found_at_4", "feature_worker"),
                             models=True, services=True,
                             check=lambda r: r["requests"]["failed"] == 0 and r["applied_after_s"] is not None
                             and r["removed_in_answers_after_applied"] == 0
                             and r["published"] == {"add": 12, "update": 5, "remove": 3}),
    "cold_items": Bench("bench_cold_items.json", keys("launched", "results", "gap_hr4_points", "apply_changes_s"),
                        models=True, check=lambda r: r["launched"] == 12
                        and set(r["results"]) == {"onevision", "mca"}),
    # the trend drift's room for any model, from the world's ground truth: three scenarios, the best shared bonus
    "drift_headroom": Bench("bench_drift_headroom.json", keys("world", "drift", "list_size", "scenarios"),
                            models=True, check=lambda r: len(r["scenarios"]) == 3
                            and all(s["requests"] == 500 and s["orders_per_1k"]["following"]
                                    >= s["orders_per_1k"]["stationary"] and s["orders_per_1k"]["shared_bonus"]
                                    == max(v for k, v in s["orders_per_1k"].items() if k.startswith("shared_bonus "))
                                    for s in r["scenarios"].values())),
    # the bonus for the trend's word that served answers would need, re-ranked by the served score: paired
    # with the served order (bonus 0 is it), and a bonus of 0 changes nothing
    "trend_bonus": Bench("bench_trend_bonus.json", keys("world", "model", "drift", "requests", "bonuses", "best_bonus"),
                         models=True, check=lambda r: r["requests"] == 40 and r["bonuses"][0]["bonus"] == 0
                         and r["bonuses"][0]["minus_served_per_1k"] == 0 and len(r["bonuses"]) == 8
                         and r["bonuses"][-1]["trend_share_of_shown"] >= r["bonuses"][0]["trend_share_of_shown"]),
    "dpo_loop": Bench("bench_dpo_loop.json", keys("config", "traffic", "variants", "p_value_live_vs_frozen",
                                                  "freshness_s", "versions", "windows"),
                      models=True, services=True, check=lambda r: r["traffic"]["requests"] > 0),
}


@pytest.fixture(scope="module")
def bench_data(tiny_generator, tiny_tokenizers, tmp_path_factory) -> Path:
    """A --data root holding copies of the tiny registry (generator included) and feature cache."""
    registry, cache, _ = tiny_tokenizers
    root = tmp_path_factory.mktemp("bench_data")
    shutil.copytree(registry, root / "registry")
    shutil.copytree(cache, root / "cache" / "features")
    return root


def test_every_bench_is_covered():
    assert sorted(BENCHES) == sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "common")


@pytest.mark.parametrize("name", [pytest.param(name, marks=bench.marks()) for name, bench in BENCHES.items()])
def test_bench_smoke(name, request, tmp_path):
    bench = BENCHES[name]
    out = tmp_path / "reports"
    argv = [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke", "--out", str(out)]
    if bench.models:
        argv += ["--data", str(request.getfixturevalue("bench_data")),
                 "--catalog", str(request.getfixturevalue("tiny_world"))]
    t0 = time.perf_counter()
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    print(f"{name} --smoke: {time.perf_counter() - t0:.0f} s")
    assert run.returncode == 0, f"{' '.join(argv)}\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
    report = json.loads((out / bench.report).read_text())
    assert bench.keys <= set(report), sorted(bench.keys - set(report))
    assert bench.check(report), json.dumps(report, indent=1)[:4000]
