"""The service on a two-node Ray cluster started on this machine (`ray start --head`, then a
second `ray start --address` with its own resources and its own node cache): one model replica on
each node, catalog and registry read from an S3-protocol store (a real moto server), 1,000
searches without an error, both replicas counted in `/metrics`, and a version published to the
store hot-swapped on both replicas with no failed request."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from pydantic import SecretStr

from infra.process import free_port
from infra.settings import ApiSettings
from onevision.registry import current_version, load_version, publish
from onevision.registry_store import StoreRegistry, push_models
from onevision.storage import filesystem
from tests.integration.test_stream_worker import isolated

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
RAY = str(Path(sys.executable).with_name("ray"))
SERIES = re.compile(r'^onevision_replica_(\w+?)(?:_total)?\{(.*)\} ([0-9.e+-]+)$')


def _ray(*args: str, env: dict | None = None) -> None:
    out = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """A head node and a worker node (resources node-a, node-b), each with its own ONEVISION_CACHE.
    Token authentication off (`RAY_AUTH_MODE=disabled`, which `ray start --head` would otherwise
    turn on): Ray reads a process's auth mode once, and this test's process may have run Ray before;
    deploy/README.md says how a real cluster's nodes and drivers share their token."""
    root = tmp_path_factory.mktemp("cluster")
    temp = tempfile.mkdtemp(prefix="ovray", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    base = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    _ray("start", "--head", f"--port={port}", "--num-cpus=2", '--resources={"node-a": 1}', f"--temp-dir={temp}",
         "--include-dashboard=false", "--disable-usage-stats", env={**base, "ONEVISION_CACHE": str(root / "cache-a")})
    try:
        _ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=2", '--resources={"node-b": 1}',
             env={**base, "ONEVISION_CACHE": str(root / "cache-b")})
        yield {"address": f"127.0.0.1:{port}", "caches": (root / "cache-a", root / "cache-b")}
    finally:
        _stop(temp)


def _stop(temp: str) -> None:
    """Kill this cluster's processes only (their command lines name its temp dir; `ray stop` would
    stop every Ray on the machine), then remove the dir."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in part for part in proc.info["cmdline"] or []):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in mine:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(mine, timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


def _metrics(url: str) -> dict[str, dict[str, float]]:
    """series -> {replica: value} of the onevision_replica_* series (version -> {replica: 1})."""
    out: dict[str, dict[str, float]] = {}
    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        m = SERIES.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            key = m.group(1) if m.group(1) != "serving" else f"serving:{labels['version']}"
            out.setdefault(key, {})[f"{labels['replica']}@{labels['node']}"] = float(m.group(3))
    return out


def test_two_nodes_serve_from_shared_storage_and_hot_swap_together(cluster, services, tiny_world, tiny_generator,
                                                                   tmp_path):
    import ray
    from ray import serve

    from serving.app import build

    shared, data = tiny_generator
    local = tmp_path / "registry"
    shutil.copytree(shared.parent.parent, local)
    model = shared.parent.name
    prefix = f"onevision/{uuid.uuid4().hex[:8]}"
    registry_url, catalog_url = f"s3://{prefix}/registry", f"s3://{prefix}/catalogs/tiny"
    push_models(local, registry_url, [model])
    fs, _ = filesystem(catalog_url)
    fs.put(f"{tiny_world}/", f"{prefix}/catalogs/tiny/", recursive=True)
    experiments = tmp_path / "experiments.yaml"  # the variant names no model: the catalog's name does
    experiments.write_text(yaml.safe_dump({"default_variant": "onevision", "variants": [{"name": "onevision"}]}))
    assert model == "generator-vrq-tiny"
    settings = isolated(services, "cluster").model_copy(update={"api": ApiSettings(
        api_key=SecretStr("cluster-test-key-0123456789"), rate_limit="100000/minute", read_rate_limit="100000/minute")})
    port = free_port()
    ray.init(address=cluster["address"], log_to_driver=False)
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        one_per_node = {"num_replicas": 2, "max_replicas_per_node": 1, "ray_actor_options": {"num_cpus": 1}}
        serve.run(build({"catalog": catalog_url, "registry": registry_url, "experiments": str(experiments),
                         "settings": settings.private_dump(), "beam": 16, "watch_s": 1.0, "item_stats_s": 0,
                         "torch_threads": 1, "deployments": {"SearchModel": one_per_node}}),
                  name="onevision", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        photos = [base64.b64encode((tiny_world / p).read_bytes()).decode()
                  for p in data.catalog.queries["image"].head(20)]

        def search(i: int) -> str | None:
            r = requests.post(f"{url}/v1/search", json={"user_id": f"u{i % 50}", "top_k": 4,
                                                         "image_b64": photos[i % len(photos)]}, timeout=120)
            return r.json()["model_version"] if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(search, range(1000)))
        took = time.perf_counter() - t0
        errors = [a for a in answers if a is None or a.startswith("HTTP")]
        assert not errors, errors[:3]
        before = current_version(local, model)
        assert set(answers) == {f"{model}/{before}"}

        deadline, seen = time.time() + 30, {}
        while time.time() < deadline:  # model replicas report every 2 s
            seen = _metrics(url).get("searches", {})
            if len(seen) == 2 and sum(seen.values()) >= 1000:
                break
            time.sleep(1)
        assert len(seen) == 2 and all(v > 0 for v in seen.values()), seen  # both replicas answered
        assert sum(seen.values()) == 1000, seen  # every search counted once, whichever replica ran it
        assert len({k.split("@")[1] for k in seen}) == 2  # on two nodes
        print(f"1,000 searches (concurrency 8) in {took:.1f} s; per replica {sorted(seen.values())}")
        for cache in cluster["caches"]:  # each node copied and checked the version and what it names itself
            assert any(cache.glob(f"registry/*/{model}/{before}/manifest.json")), cache
            assert any(cache.glob("registry/*/tokenizer-vrq-tiny/*/manifest.json")), cache
            assert any(cache.glob("registry/*/encoder-tiny/*/manifest.json")), cache
            assert any(cache.glob("catalogs/*/*/tiny/items.parquet")), cache

        # a new version goes to the store while searches keep coming: both replicas swap, none fails
        failures: list[str] = []
        versions: set[str] = set()
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                a = search(i)
                i += 1
                if a is None or a.startswith("HTTP"):
                    failures.append(str(a))
                else:
                    versions.add(a)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        current = local / model / before
        manifest, config = load_version(current)
        new = publish(local, model, {f: current / f for f in manifest["files"] if f != "config.json"}, config,
                      metrics=manifest["metrics"], parent=before).name
        pushed = push_models(local, registry_url, [model])
        t_push = time.perf_counter()
        assert pushed[-1]["current"] == new and StoreRegistry(registry_url).current_version(model) == new
        deadline, swapped = time.time() + 90, {}
        while time.time() < deadline:
            swapped = _metrics(url).get(f"serving:{model}/{new}", {})
            if len(swapped) == 2:
                break
            time.sleep(0.5)
        swap_s = time.perf_counter() - t_push
        time.sleep(3)  # searches after the swap
        stop.set()
        for t in threads:
            t.join(timeout=120)
        assert len(swapped) == 2, _metrics(url)  # both replicas serve the new version
        assert not failures, failures[:3]
        assert f"{model}/{new}" in versions
        assert search(0) == f"{model}/{new}"
        print(f"both replicas serve {new} {swap_s:.1f} s after the push; {len(failures)} failed requests "
              f"under load ({len(versions)} versions answered)")
    finally:
        serve.shutdown()
        ray.shutdown()
