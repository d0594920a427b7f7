"""One `/metrics` for the whole application, however many replicas on however many nodes.

Each replica (ingress or model) keeps its own Prometheus registry and reports a snapshot of it
every `REPORT_S` to `MetricsHub`, a one-replica deployment of the same application; `/metrics`
answers with the hub's merge. Counters and histograms are summed over processes (a replica that
stopped keeps its counts: what it served was served), gauges are taken from processes that
reported within `STALE_S` (the newest report wins when two carry the same labels). So a scrape
that lands on any ingress counts every replica, under the metric names a single process used.
Per-replica series carry a `replica` label (`onevision_replica_*`), which shows which replicas
answered and what each serves.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from ray import serve

log = logging.getLogger("ray.serve")
REPORT_S = 2.0
STALE_S = 60.0  # a gauge from a process silent this long is dropped
DEPART_S = 3600.0  # a process silent this long has gone: its counts fold into the departed totals
SUMMED = ("counter", "histogram", "summary")
ANSWER_S = 2.0  # how long /metrics waits for the hub

Sample = tuple[str, dict[str, str], float]
Family = tuple[str, str, str, list[Sample]]  # name, type, help, samples


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """A registry's families as plain tuples (what travels to the hub); `_created` series are left
    out, since a sum of creation times means nothing."""
    return [(m.name, m.type, m.documentation,
             [(s.name, dict(s.labels), float(s.value)) for s in m.samples if not s.name.endswith("_created")])
            for m in registry.collect()]


def merge(reports: dict[str, tuple[float, list[Family]]], now: float, stale_s: float = STALE_S) -> list[Metric]:
    """The families of every process's latest report (process -> (time, families)), merged (see the
    module's docstring)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple, tuple[float, float]]] = {}  # family -> (sample, labels) -> (value, report time)
    for at, report in sorted(reports.values(), key=lambda r: r[0]):  # oldest first: the newest gauge wins
        for name, kind, doc, samples in report:
            if kind not in SUMMED and now - at > stale_s:
                continue
            families.setdefault(name, Metric(name, doc, kind))
            table = values.setdefault(name, {})
            for sample, labels, value in samples:
                key = (sample, tuple(sorted(labels.items())))
                old = table.get(key, (0.0, at))[0] if kind in SUMMED else 0.0
                table[key] = (old + value, at)
    for name, metric in families.items():
        for (sample, labels), (value, _) in values[name].items():
            metric.add_sample(sample, dict(labels), value)
    return list(families.values())


def exposition(metrics: list[Metric]) -> str:
    class Merged:
        def collect(self):
            return metrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry).decode()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
class MetricsHub:
    """Holds each replica's latest metrics snapshot; answers their merge. A process silent for
    `DEPART_S` is forgotten: its summed series without a `replica` label (the ingress's totals) are
    kept in `departed`, so totals never go down, and its per-replica series leave with it. A hub
    that restarts starts from zero, which Prometheus reads as a counter reset."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[float, int, list[Family]]] = {}  # process -> (arrival, sequence, families)
        self.departed: dict[tuple[str, str, str], dict[tuple, float]] = {}  # (family, type, help) -> sample -> sum

    def report(self, process: str, families: list[Family], sequence: int = 0) -> None:
        old = self.reports.get(process)
        if old is not None and old[1] > sequence:  # a slower delivery of an older snapshot
            return
        self.reports[process] = (time.time(), sequence, families)

    def _forget_departed(self, now: float) -> None:
        for process, (at, _, families) in list(self.reports.items()):
            if now - at <= DEPART_S:
                continue
            for name, kind, doc, samples in families:
                if kind in SUMMED:
                    table = self.departed.setdefault((name, kind, doc), {})
                    for sample, labels, value in samples:
                        if "replica" not in labels:
                            key = (sample, tuple(sorted(labels.items())))
                            table[key] = table.get(key, 0.0) + value
            del self.reports[process]

    def exposition(self) -> str:
        now = time.time()
        self._forget_departed(now)
        reports = {p: (at, fams) for p, (at, _, fams) in self.reports.items()}
        if self.departed:
            reports["departed"] = (0.0, [(name, kind, doc, [(s, dict(labels), v) for (s, labels), v in table.items()])
                                         for (name, kind, doc), table in self.departed.items()])
        return exposition(merge(reports, now))

    def processes(self) -> list[str]:
        return sorted(self.reports)


def replica_name() -> str:
    """`<deployment>#<replica id>` of the replica this runs in (its process's key at the hub)."""
    ctx = serve.get_replica_context()
    return f"{ctx.deployment}#{ctx.replica_id.unique_id}"


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


class Reporter:
    """Sends a registry's snapshot to the hub every `every_s` from a daemon thread (and on demand);
    a hub that does not answer is logged and tried again, never raised into the replica."""

    def __init__(self, hub: Any, registry: CollectorRegistry, every_s: float = REPORT_S):
        self.hub, self.registry, self.name = hub, registry, replica_name()
        self.stopped = threading.Event()
        if every_s > 0:
            threading.Thread(target=self._loop, args=(every_s,), daemon=True, name="metrics-report").start()

    def _loop(self, every_s: float) -> None:
        while not self.stopped.wait(every_s):
            try:
                self.hub.report.remote(self.name, snapshot(self.registry), time.monotonic_ns()).result(timeout_s=10)
            except Exception as exc:  # noqa: BLE001 - the hub restarting: the next report catches up
                log.warning("metrics not reported to the hub: %s", type(exc).__name__)

    async def merged(self, timeout_s: float = ANSWER_S) -> str:
        """This process's snapshot sent, then the hub's merge of every process; raises TimeoutError
        (or the hub's error) when the hub does not answer within `timeout_s`."""
        import asyncio

        async def ask() -> str:
            await self.hub.report.remote(self.name, snapshot(self.registry), time.monotonic_ns())
            return await self.hub.exposition.remote()

        return await asyncio.wait_for(ask(), timeout_s)
