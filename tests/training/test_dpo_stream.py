"""The streaming DPO job's parts without Kafka: sessions -> candidate SIDs, micro-batch updates
that skip non-finite steps, and the eval gate that rejects a scrambled candidate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onevision.generator.image_search import ImageSearch
from streaming.request_log import RequestContext
from streaming.schema import SessionLog
from training.dpo_gate import Gate, GateConfig
from training.dpo_stream import StreamConfig, StreamExample, StreamLearner, session_candidates


def session(purchased, clicked=(), exposed=(), rid="r1") -> SessionLog:
    return SessionLog(session_id=rid, request_id=rid, user_id="u1", scene="image_search", start_ts=1, end_ts=2,
                      exposed=[*purchased, *clicked, *exposed], purchased=list(purchased),
                      clicked_not_bought=list(clicked), exposed_not_clicked=list(exposed), user_features={})


def test_candidates_put_the_purchase_first_and_drop_what_cannot_teach():
    row = {"a": 0, "b": 1, "c": 2, "d": 3}
    sids = np.array([[0, 1], [0, 2], [0, 1], [1, 0]])  # c shares a's SID
    got = session_candidates(session(["a"], clicked=["c", "b"], exposed=["d", "zz"]), row, sids, max_negatives=3)
    assert got.tolist() == [[0, 1], [0, 2], [1, 0], [-1, -1]]  # c dropped (the positive's SID), unknown zz ignored
    assert session_candidates(session([], clicked=["a"]), row, sids, 3) is None  # no purchase
    assert session_candidates(session(["a"], clicked=["c"]), row, sids, 3) is None  # no negative with another SID
    assert session_candidates(session(["zz"], clicked=["a"]), row, sids, 3) is None  # an item the catalog lacks


def stream_examples(search: ImageSearch, catalog, n: int = 12, seed: int = 0) -> list[StreamExample]:
    """Train-split order photos as logged requests: the target bought, a few other items shown."""
    q = catalog.queries[catalog.queries["split"] == "train"].head(n)
    vis = search.encode([catalog.path(p) for p in q["image"]])
    rng = np.random.default_rng(seed)
    row = {item: i for i, item in enumerate(search.item_ids)}
    out = []
    for r, (rid, user, target) in enumerate(zip(q["query_id"], q["user_id"], q["target_item_id"])):
        others = [search.item_ids[i] for i in rng.choice(len(search.item_ids), 4, replace=False)]
        cands = session_candidates(session([target], exposed=others, rid=rid), row, search.searcher.item_sids, 4)
        ctx = RequestContext(rid, user, "image_search", 0, "v", "m/v1", {}, vis.tokens[r], vis.embedding[r])
        out.append(StreamExample(rid, 0, ctx, cands))
    return out


@pytest.fixture(scope="module")
def parts(tiny_generator):
    version, data = tiny_generator
    search = ImageSearch.from_registry(version, data.catalog)
    return search, data, stream_examples(search, data.catalog)


def test_an_update_moves_the_policy_and_keeps_the_reference(parts):
    search, _, examples = parts
    torch.manual_seed(0)
    learner = StreamLearner(search, search.searcher.model, StreamConfig(steps=2, lr=1e-3, replay=5))
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    stats = learner.update(examples)
    assert stats["steps"] == 2 and stats["skipped_nonfinite"] == 0 and np.isfinite(stats["loss"])
    moved = [k for k, v in learner.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert moved
    assert all(torch.equal(v, before[k]) for k, v in learner.reference.state_dict().items())
    assert len(learner.replay) == 5  # bounded


def test_a_non_finite_batch_is_skipped_and_counted(parts):
    search, _, examples = parts
    learner = StreamLearner(search, search.searcher.model, StreamConfig(steps=3, lr=1e-3))
    bad = examples[0]
    nan = np.full_like(bad.context.embedding, np.nan)
    poisoned = StreamExample(bad.request_id, 0, RequestContext(**{**bad.context.__dict__, "embedding": nan}),
                             bad.candidates)
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    stats = learner.update([poisoned, *examples[1:4]])
    assert stats == {"steps": 0, "skipped_nonfinite": 3, "loss": None}
    assert all(torch.equal(v, before[k]) for k, v in learner.policy.state_dict().items())
    assert [e.request_id for e in learner.replay] == [e.request_id for e in examples[1:4]]  # never the poisoned one
    assert learner.update(examples[1:4])["steps"] == 3  # the next clean batch trains


def test_after_a_rejection_the_policy_restarts_from_the_reference_and_trains(parts):
    search, _, examples = parts
    learner = StreamLearner(search, search.searcher.model, StreamConfig(steps=1, lr=1e-3))
    learner.update(examples[:4])
    learner.reset(learner.reference)  # what the job does when the gate rejects a candidate
    assert all(torch.equal(p, r) for p, r in zip(learner.policy.parameters(), learner.reference.parameters()))
    assert learner.update(examples[4:8])["steps"] == 1


@pytest.fixture(scope="module")
def gate(parts):
    search, data, _ = parts
    return Gate(data, search.searcher.model, GateConfig(orders=40, canary=40))


def test_the_gate_accepts_the_reference_and_rejects_scrambled_weights(parts, gate):
    search, data, _ = parts
    reference = search.searcher.model
    ref_scores = gate.score(reference)
    assert gate.judge(gate.score(reference), ref_scores).accepted  # deterministic: same model, same scores
    scrambled = StreamLearner(search, reference, StreamConfig()).policy
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in scrambled.parameters():
            p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].view_as(p))
    verdict = gate.judge(gate.score(scrambled), ref_scores)
    assert not verdict.accepted and any("canary_HR@1" in r for r in verdict.reasons), verdict


def test_small_losses_cannot_add_up_past_the_anchor(gate):
    anchor = {"order_HR@4": 80.0, "canary_HR@1": 90.0}
    reference = {"order_HR@4": 78.5, "canary_HR@1": 90.0}  # an accepted step 1.5 points down
    candidate = {"order_HR@4": 77.0, "canary_HR@1": 90.0}  # another 1.5: fine against the reference alone
    assert gate.judge(candidate, reference).accepted
    verdict = gate.judge(candidate, reference, anchor)
    assert not verdict.accepted and verdict.reasons == ["order_HR@4 77.00 < anchor 80.00 - 2.0"]
    assert not gate.judge({**candidate, "canary_HR@1": float("nan")}, reference).accepted


def test_stored_scores_count_only_when_this_gate_scored_them(gate):
    anchor = {"order_HR@4": 80.0, "canary_HR@1": 90.0}
    reference = {"order_HR@4": 79.0, "canary_HR@1": 91.0}
    record = gate.record(gate.judge(reference, anchor, anchor))
    assert gate.stored(record) == (reference, anchor)
    assert gate.stored({}) is None  # never gated: score it
    # scored by an older search (before the look-ahead existed, say) or on other sets: score again
    assert gate.stored({k: v for k, v in record.items() if k != "scored_by"}) is None
    assert gate.stored({**record, "scored_by": {**record["scored_by"], "search": "with look-ahead"}}) is None
    assert gate.stored({**record, "scored_by": {**record["scored_by"], "orders": 41}}) is None


def test_the_job_process_runs_its_own_entry_point_with_the_config_it_was_given(tmp_path):
    """`dpo_argv` starts `training.run_dpo_stream` (never the CLI) with the whole run as JSON, which
    reads back equal; options name the fields of the run, its StreamConfig and its GateConfig."""
    from infra.process import config_from_argv
    from training.launch import dpo_argv
    from training.run_dpo_stream import DPOStreamRun, dpo_stream_run

    options = {"group": "g", "micro_batch": 8, "max_wait_s": 1.5, "orders": 40, "tolerance": 100.0,
               "canary_tolerance": 50.0, "log_level": "WARNING", "max_idle_s": 5.0, "seed": 3}
    argv = dpo_argv(tmp_path / "catalog", "registry", "m", tmp_path / "cache", options)
    assert argv[1:4] == ["-m", "training.run_dpo_stream", "--config"] and "onevision_cli" not in " ".join(argv)
    run = config_from_argv(DPOStreamRun, argv[3:])
    assert run == dpo_stream_run(tmp_path / "catalog", "registry", "m", tmp_path / "cache", options)
    assert run.registry.is_absolute() and (run.max_idle_s, run.log_level) == (5.0, "WARNING")
    want = StreamConfig(group="g", micro_batch=8, max_wait_s=1.5, seed=3,
                        gate=GateConfig(orders=40, tolerance=100.0, canary_tolerance=50.0))
    assert run.config == want
    with pytest.raises(ValueError, match="no option 'bogus'"):
        dpo_stream_run("c", "r", "m", "x", {"bogus": 1})
