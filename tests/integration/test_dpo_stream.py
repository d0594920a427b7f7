"""The near-streaming DPO job against the real broker and Redis: session logs and the request
contexts serving logged -> gated versions in the registry with their offsets; malformed logs to
the DLQ; redelivered logs recognised; a scrambled candidate rejected and never served; `kill -9`
and a restart train every session exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from kafka import KafkaConsumer, KafkaProducer

from onevision.generator.image_search import ImageSearch
from onevision.generator.rank.title_lift import LiftConfig
from onevision.registry import current_version, load_version, promote, versions
from serving.experiments import ExperimentConfig
from serving.models import ServedModels
from streaming.request_log import RequestContext, RequestLog
from streaming.schema import SessionLog
from streaming.status import end_offsets as topic_offsets
from tests.integration.test_stream_worker import isolated
from training.dpo_gate import GateConfig
from training.dpo_stream import DPOStreamJob, StreamConfig, job_versions
from training.launch import dpo_argv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
FAST = dict(micro_batch=8, max_wait_s=1.0, steps=1, lr=1e-4, catch_up_batch=8)


@pytest.fixture(scope="module")
def world(tiny_generator, tiny_tokenizers, tmp_path_factory):
    """A private copy of the registry, the generator's search, and logged contexts of train photos."""
    shared, data = tiny_generator
    catalog = data.catalog
    search = ImageSearch.from_registry(shared, catalog)
    q = catalog.queries[catalog.queries["split"] == "train"].reset_index(drop=True)
    vis = search.encode([catalog.path(p) for p in q["image"]])
    return {"shared": shared, "catalog": catalog, "search": search, "queries": q, "vis": vis,
            "cache": tiny_tokenizers[1], "tmp": tmp_path_factory}


def fresh_registry(world, name: str):
    root = world["tmp"].mktemp(name) / "registry"
    shutil.copytree(world["shared"].parent.parent, root)
    return root, world["shared"].parent.name


def send_sessions(settings, world, rows, malformed: int = 0, without_purchase: int = 0) -> int:
    """Produce a request context, then a closed session (the target bought, three items shown and
    not clicked), for each query row, as serving and the session worker would; returns how many
    messages went to the sessions topic."""
    q, vis, items = world["queries"], world["vis"], world["search"].item_ids
    contexts, logs, producer = [], [], KafkaProducer(**settings.kafka.client_options(), acks="all")
    rng = np.random.default_rng(len(rows))
    for r in rows:
        rid = f"req-{r}-{rng.integers(1 << 30)}"
        others = [items[i] for i in rng.choice(len(items), 3, replace=False) if items[i] != q["target_item_id"][r]]
        contexts.append(RequestContext(rid, q["user_id"][r], "image_search", int(time.time() * 1000), "live", "m/v",
                                       {}, vis.tokens[r], vis.embedding[r]))
        logs.append(SessionLog(session_id=rid, request_id=rid, user_id=q["user_id"][r], scene="image_search",
                               start_ts=1, end_ts=int(time.time() * 1000), exposed=[q["target_item_id"][r], *others],
                               purchased=[q["target_item_id"][r]], clicked_not_bought=[], exposed_not_clicked=others,
                               user_features={}))
    for i in range(without_purchase):
        logs.append(SessionLog(session_id=f"np{i}", request_id=f"np{i}", user_id="u1", scene="image_search",
                               start_ts=1, end_ts=2, exposed=[items[0]], purchased=[], clicked_not_bought=[],
                               exposed_not_clicked=[items[0]], user_features={}))
    RequestLog(producer, settings.kafka.requests_topic).put(contexts)
    producer.flush()
    for log in logs:
        producer.send(settings.kafka.sessions_topic, key=log.user_id.encode(),
                      value=log.model_dump_json(by_alias=True).encode())
    for _ in range(malformed):
        producer.send(settings.kafka.sessions_topic, key=b"u1", value=b'{"schema": 1, "session_id": "broken"')
    producer.flush()
    producer.close()
    return len(logs) + malformed


def end_offsets(settings) -> dict[int, int]:
    c = KafkaConsumer(**settings.kafka.client_options())
    try:
        return {p: end for p, (_, end) in topic_offsets(c, settings.kafka.sessions_topic).items()}
    finally:
        c.close()


def unpublished_tail(settings, covered: dict[int, int]) -> list[SessionLog]:
    """The session logs after the published offsets, to the end of each partition."""
    from kafka import TopicPartition

    ends = end_offsets(settings)
    c = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    tps = [TopicPartition(settings.kafka.sessions_topic, p) for p, end in ends.items() if end > covered.get(p, 0)]
    c.assign(tps)
    for tp in tps:
        c.seek(tp, covered.get(tp.partition, 0))
    out, deadline = [], time.time() + 20
    while any(c.position(tp) < ends[tp.partition] for tp in tps) and time.time() < deadline:
        for msgs in c.poll(timeout_ms=500).values():
            out += [SessionLog.model_validate_json(m.value) for m in msgs if m.offset < ends[m.partition]]
    c.close()
    return out


def assert_exactly_once(registry, model, group, settings, sessions: int) -> tuple[list[dict], list[SessionLog]]:
    """The versions' offset ranges tile every partition from 0: nothing twice, nothing skipped. What
    follows the last published offsets may only be logs already trained on (redelivered ones,
    which publish nothing: the next micro-batch's offsets will cover them)."""
    rows = job_versions(registry, model, group)
    assert rows, "the job published nothing"
    covered: dict[int, int] = {}
    for r in rows:
        s = r["stream"]
        for p, start in s["from"].items():
            assert int(start) == covered.get(int(p), 0), (r["version"], p, start, covered)
        covered.update({int(p): int(o) for p, o in s["through"].items()})
    trained = {i for r in rows for i in r["stream"]["session_ids"]}
    tail = unpublished_tail(settings, covered)
    assert all(t.request_id in trained for t in tail), [t.request_id for t in tail if t.request_id not in trained]
    assert sum(r["stream"]["sessions"] + r["stream"]["dlq"] for r in rows) + len(tail) == sessions
    return rows, tail


def test_sessions_become_gated_versions_with_their_offsets(services, world):
    settings = isolated(services, "dpo-flow")
    registry, model = fresh_registry(world, "dpo-flow")
    start = current_version(registry, model)
    sent = send_sessions(settings, world, range(20), malformed=1, without_purchase=2)
    sent += send_sessions(settings, world, range(20))  # the same 20 logs again: the topic is at least once
    job = DPOStreamJob(settings, world["catalog"], registry, model, world["cache"],
                       StreamConfig(group="flow", **FAST, gate=GateConfig(orders=40, canary=40, tolerance=100,
                                                                          canary_tolerance=100),
                                    lift_min_sessions=8, lift_fit=LiftConfig(min_count=2)))
    totals = job.run(max_idle_s=4, install_signals=False)
    rows, tail = assert_exactly_once(registry, model, "flow", settings, sent)
    assert totals["examples"] == 20 and totals["accepted"] == len(rows) >= 3
    assert sum(r["stream"]["no_purchase"] for r in rows) == 2 and sum(r["stream"]["dlq"] for r in rows) == 1
    assert sum(r["stream"]["duplicates"] for r in rows) + len(tail) == 20
    parents = [start] + [r["version"] for r in rows[:-1]]
    assert [r["parent"] for r in rows] == parents  # each trained from the one before
    assert current_version(registry, model) == rows[-1]["version"]
    manifest, _ = load_version(registry / model / rows[-1]["version"])  # files match their sha256
    assert set(manifest["gate"]["candidate"]) >= {"order_HR@4", "canary_HR@1"}
    assert len(manifest["stream"]["session_end_ts"]) == manifest["stream"]["examples"]
    phases = manifest["stream"]["seconds"]  # where the version's cycle went: the job's throughput bound
    assert set(phases) == {"update", "lift", "gate"} and min(phases.values()) >= 0
    assert 0 < sum(phases.values()) <= manifest["stream"]["train_seconds"] + 0.05
    # each version carries the title lift refitted on the purchase sessions so far, and serves it
    # (a first micro-batch cut short by max_wait_s, under lift_min_sessions, publishes none: the reference has none)
    fits = [load_version(registry / model / r["version"])[0]["metrics"].get("title_lift") for r in rows]
    lifts = [f["sessions"] for f in fits if f is not None]
    assert lifts == sorted(lifts) and lifts[-1] == 20 and fits[-1] is not None
    measured = [f for f in fits if f is not None and "beta" in f]  # the first fit measures beta, the rest keep it
    assert not measured[0]["beta_fixed"] and all(f["beta_fixed"] and f["beta"] == max(measured[0]["beta"], 0.02)
                                                  for f in measured[1:])
    served = ImageSearch.from_registry(registry / model / rows[-1]["version"], world["catalog"])
    assert served.lift is not None and served.lift.words
    assert (served.searcher.lift is not None) == bool(np.any(served.lift.bonus))
    dlq = KafkaConsumer(settings.kafka.dlq_topic, **settings.kafka.client_options(),
                        auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = [json.loads(m.value) for m in dlq]
    dlq.close()
    assert [(x["reason"], x["topic"]) for x in letters] == [("malformed session log", settings.kafka.sessions_topic)]

    # an operator rolls back while the job runs: its next micro-batch trains from the new CURRENT
    again = DPOStreamJob(settings, world["catalog"], registry, model, world["cache"],
                         StreamConfig(group="flow", **FAST, gate=GateConfig(orders=40, canary=40, tolerance=100,
                                                                            canary_tolerance=100)))
    promote(registry, model, start)
    send_sessions(settings, world, range(20, 26))
    again.run(max_idle_s=4, install_signals=False)
    newest = job_versions(registry, model, "flow")[-1]
    assert newest["parent"] == start and newest["stream"]["examples"] == 6
    assert current_version(registry, model) == newest["version"]


def test_a_job_that_is_behind_takes_what_is_waiting_into_one_version(services, world):
    """Sessions already on the topic when a micro-batch falls due join it, up to catch_up_batch;
    what arrives later waits for the next version, and the offsets still tile the topic."""
    settings = isolated(services, "dpo-behind")
    registry, model = fresh_registry(world, "dpo-behind")
    sent = send_sessions(settings, world, range(30))
    job = DPOStreamJob(settings, world["catalog"], registry, model, world["cache"],
                       StreamConfig(group="behind", **{**FAST, "catch_up_batch": 24}, lift=False,
                                    gate=GateConfig(orders=40, canary=40, tolerance=100, canary_tolerance=100)))
    totals = job.run(max_idle_s=4, install_signals=False)
    rows, _ = assert_exactly_once(registry, model, "behind", settings, sent)
    assert [(r["stream"]["examples"], r["stream"]["caught_up"]) for r in rows] == [(24, 16), (6, 0)]
    assert totals["examples"] == 30


def test_a_scrambled_candidate_is_rejected_and_never_served(services, world, tmp_path):
    settings = isolated(services, "dpo-gate")
    registry, model = fresh_registry(world, "dpo-gate")
    start = current_version(registry, model)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(yaml.safe_dump({"default_variant": "live", "variants": [{"name": "live", "model": model}]}))
    served = ServedModels(world["catalog"], registry, ExperimentConfig.load(experiments), beam=8)
    send_sessions(settings, world, range(8))
    job = DPOStreamJob(settings, world["catalog"], registry, model, world["cache"],
                       StreamConfig(group="gate", **FAST, gate=GateConfig(orders=40, canary=40)))
    train = job.learner.update

    def scramble(examples):  # a training bug or a poisoned stream: the candidate's weights are garbage
        stats = train(examples)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in job.learner.policy.parameters():
                p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].view_as(p))
        return stats

    job.learner.update = scramble
    job.run(max_idle_s=4, install_signals=False)
    (row,) = job_versions(registry, model, "gate")
    assert row["status"] == "rejected" and row["gate"]["reasons"], row["gate"]
    assert current_version(registry, model) == start
    assert served.refresh() == [] and served.versions["live"] == f"{model}/{start}"
    assert row["stream"]["through"]  # its sessions are consumed: the next candidate starts after them


def test_kill_9_and_restart_train_every_session_exactly_once(services, world, tmp_path):
    settings = isolated(services, "dpo-kill")
    registry, model = fresh_registry(world, "dpo-kill")
    options = {"group": "kill", "micro_batch": 8, "catch_up_batch": 8, "max_wait_s": 1, "steps": 1, "orders": 40,
               "tolerance": 100, "canary_tolerance": 100, "log_level": "WARNING",
               "lease_ttl_s": 5}  # the killed job's lease lapses soon
    argv = dpo_argv(world["catalog"].root, registry, model, world["cache"], options)
    env = {**os.environ, **settings.to_env()}
    sent = send_sessions(settings, world, range(40))
    log = open(tmp_path / "job.log", "wb")
    job = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not job_versions(registry, model, "kill"):
        assert job.poll() is None and time.time() < deadline, (tmp_path / "job.log").read_text()[-3000:]
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)  # mid-stream: later micro-batches were read, maybe trained, not published
    job.wait()
    first = len(versions(registry, model))
    sent += send_sessions(settings, world, range(40, 56))
    sent += send_sessions(settings, world, range(40))  # redelivered: known from the manifests or the micro-batch
    until_idle = dpo_argv(world["catalog"].root, registry, model, world["cache"], {**options, "max_idle_s": 5})
    job = subprocess.run(until_idle, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=400)
    assert job.returncode == 0, (tmp_path / "job.log").read_text()[-3000:]
    rows, tail = assert_exactly_once(registry, model, "kill", settings, sent)
    assert len(versions(registry, model)) > first and sum(r["stream"]["examples"] for r in rows) == 56
    assert sum(r["stream"]["duplicates"] for r in rows) + len(tail) == 40
    trained = [i for r in rows for i in r["stream"]["session_ids"]]
    assert len(trained) == len(set(trained)) == 56


def test_a_recreated_sessions_topic_is_read_from_its_start(services, world):
    """The manifests outlive the broker (an embedded one restarts with empty topics): offsets of
    another log are not trusted, checked by the digest of the last log each version read."""
    from kafka import KafkaAdminClient

    from infra import services as svc
    from training.dpo_stream import check_resume, digest, resume_offsets

    settings = isolated(services, "dpo-recreated")
    registry, model = fresh_registry(world, "dpo-recreated")
    config = StreamConfig(group="recreated", **FAST, gate=GateConfig(orders=40, canary=40, tolerance=100,
                                                                     canary_tolerance=100))
    send_sessions(settings, world, range(8))
    DPOStreamJob(settings, world["catalog"], registry, model, world["cache"], config).run(max_idle_s=4,
                                                                                           install_signals=False)
    first = job_versions(registry, model, "recreated")
    offsets, marks = resume_offsets(first, settings.kafka.sessions_topic)
    assert set(marks) == {p for p, o in offsets.items() if o > 0} and offsets
    assert check_resume(settings, settings.kafka.sessions_topic, offsets, marks) == (offsets, [])  # the same log
    wrong = {**marks, min(marks): digest(b"another log")}
    valid, reset = check_resume(settings, settings.kafka.sessions_topic, offsets, wrong)
    assert reset == [min(marks)] and valid == {**offsets, min(marks): 0}
    assert resume_offsets(first, "another.topic") == ({}, {})  # offsets belong to their topic

    admin = KafkaAdminClient(**settings.kafka.client_options())
    admin.delete_topics([settings.kafka.sessions_topic])
    admin.close()
    deadline = time.time() + 20
    while time.time() < deadline:  # recreated empty (as `infra up` does), as after a broker restart
        try:
            svc.ensure_topics(settings)
            if not any(end_offsets(settings).values()):
                break
        except Exception:  # the deletion is still going through
            pass
        time.sleep(0.5)
    assert not any(end_offsets(settings).values())
    assert sorted(check_resume(settings, settings.kafka.sessions_topic, offsets, marks)[1]) == sorted(marks)
    send_sessions(settings, world, range(8, 14))
    DPOStreamJob(settings, world["catalog"], registry, model, world["cache"], config).run(max_idle_s=4,
                                                                                           install_signals=False)
    later = job_versions(registry, model, "recreated")[len(first):]
    assert sum(r["stream"]["examples"] for r in later) == 6  # none of the new log's sessions skipped
    assert all(int(o) == 0 for o in later[0]["stream"]["from"].values())


def test_a_second_job_for_the_same_model_refuses_while_the_first_holds_the_lease(services, tmp_path):
    from infra.lease import Lease, LeaseHeld
    from infra.settings import redis_client
    from training.dpo_stream import lease_key

    settings = isolated(services, "dpo-lease")
    r = redis_client(settings.redis)
    first = Lease(r, lease_key("lease-model"), ttl_s=30, token="host-1-first")  # what a running job holds
    first.acquire()
    config = StreamConfig(group="lease", lease_wait_s=0.5)
    with pytest.raises(LeaseHeld, match="another DPO stream job is training lease-model: .* held by host-1-first"):
        DPOStreamJob(settings, None, tmp_path / "registry", "lease-model", tmp_path / "cache", config)
    first.release()  # the first job closed: the next one starts (here up to the empty registry it is given)
    with pytest.raises(FileNotFoundError, match="no CURRENT"):
        DPOStreamJob(settings, None, tmp_path / "registry", "lease-model", tmp_path / "cache", config)
    assert r.get(lease_key("lease-model")) is None  # a start that failed gave the lease back
