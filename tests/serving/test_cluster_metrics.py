"""The metrics merge behind /metrics: counters and histograms summed over replicas, gauges from
replicas heard lately (the newest wins), older snapshots ignored, departed replicas' totals kept."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from serving.cluster_metrics import DEPART_S, STALE_S, MetricsHub, exposition, merge, snapshot


def _process(requests: int, queued: float, replica: str | None = None) -> list:
    """One process's snapshot, as `snapshot` makes it (written out: prometheus_client shares the
    values of same-named metrics within one process once Feast has switched it to multiprocess mode)."""
    families = [
        ("onevision_requests", "counter", "searches", [("onevision_requests_total", {"variant": "a"}, requests)]),
        ("onevision_queue", "gauge", "queued", [("onevision_queue", {}, queued)]),
        ("onevision_request_seconds", "histogram", "latency",
         [("onevision_request_seconds_bucket", {"le": "0.1"}, float(requests <= 2)),
          ("onevision_request_seconds_bucket", {"le": "+Inf"}, 1.0),
          ("onevision_request_seconds_count", {}, 1.0), ("onevision_request_seconds_sum", {}, 0.05 * requests)])]
    if replica:
        families.append(("onevision_replica_searches", "counter", "per replica",
                         [("onevision_replica_searches_total", {"replica": replica}, requests)]))
    return families


def test_a_snapshot_is_a_registry_without_its_creation_times():
    r = CollectorRegistry()
    Counter("onevision_snapshot_probe", "a counter", ["variant"], registry=r).labels("a").inc(2)
    Gauge("onevision_snapshot_gauge", "a gauge", registry=r).set(5)
    Histogram("onevision_snapshot_seconds", "a histogram", buckets=(1,), registry=r).observe(0.5)
    names = {sample for _, _, _, samples in snapshot(r) for sample, _, _ in samples}
    assert {"onevision_snapshot_probe_total", "onevision_snapshot_gauge", "onevision_snapshot_seconds_count"} <= names
    assert not any(n.endswith("_created") for n in names)


def _values(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_counters_and_histograms_add_up_and_the_newest_gauge_wins():
    reports = {"ingress#1": (100.0, _process(3, 5.0)), "ingress#2": (101.0, _process(4, 7.0))}
    v = _values(exposition(merge(reports, now=102.0)))
    assert v[("onevision_requests_total", (("variant", "a"),))] == 7
    assert v[("onevision_request_seconds_count", ())] == 2
    assert v[("onevision_request_seconds_bucket", (("le", "+Inf"),))] == 2
    assert v[("onevision_queue", ())] == 7.0  # the newer report's
    assert not any(name.endswith("_created") for name, _ in v)
    stale = _values(exposition(merge(reports, now=101.0 + STALE_S + 1)))
    assert ("onevision_queue", ()) not in stale  # nobody heard lately: no gauge
    assert stale[("onevision_requests_total", (("variant", "a"),))] == 7  # counts stay


def test_the_hub_ignores_older_snapshots_and_keeps_departed_totals(monkeypatch):
    hub = MetricsHub.func_or_class()
    clock = [1000.0]
    monkeypatch.setattr("serving.cluster_metrics.time.time", lambda: clock[0])
    hub.report("model#1", _process(5, 1.0, replica="model#1"), sequence=2)
    hub.report("model#1", _process(2, 1.0, replica="model#1"), sequence=1)  # late, older: ignored
    hub.report("model#2", _process(3, 1.0, replica="model#2"), sequence=1)
    v = _values(hub.exposition())
    assert v[("onevision_requests_total", (("variant", "a"),))] == 8
    assert v[("onevision_replica_searches_total", (("replica", "model#1"),))] == 5
    assert v[("onevision_replica_searches_total", (("replica", "model#2"),))] == 3

    clock[0] += DEPART_S / 2
    hub.report("model#2", _process(4, 1.0, replica="model#2"), sequence=2)
    clock[0] += DEPART_S / 2 + 1  # model#1 silent for longer than DEPART_S: gone
    v = _values(hub.exposition())
    assert hub.processes() == ["model#2"]
    assert v[("onevision_requests_total", (("variant", "a"),))] == 9  # its 5 stay in the total
    assert ("onevision_replica_searches_total", (("replica", "model#1"),)) not in v  # its own series left
