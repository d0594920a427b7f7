"""Recipe `train dpo-stream`: near-streaming list-wise DPO (OneVision eq. 10, OneSearch 3.4.2).

The job reads closed image-search sessions from `onevision.sessions` as a consumer group. A
session that ended in a purchase becomes a list-wise example: the context is what the model
saw at request time (the photo's visual tokens and the user's features, which serving produces
to the requests topic and the job joins by request id within a bounded window,
`streaming.request_log.ContextJoin`), the positive the purchased item's SID, the negatives the SIDs of
clicked-not-bought and then exposed-not-clicked items. Every micro-batch (`micro_batch`
examples, or `max_wait_s` after the first; a job that has fallen behind takes the sessions already
waiting too, up to `catch_up_batch`) trains a few AdamW steps of eq. 10 (+ eq. 11's NLL
term) against a frozen reference, the last accepted version, mixed with a bounded replay
buffer of earlier examples. A step whose loss or gradient is not finite is skipped and counted.

Each micro-batch yields a candidate that the eval gate (`training.dpo_gate`) scores against the
reference and against the anchor (the version the lineage started from). The candidate is
published to the registry either way, atomically, with its parent, gate metrics, sha256s and
the Kafka offsets it trained through. An accepted candidate becomes
CURRENT, so serving hot-swaps it in, and it becomes the next reference. A rejected one is kept
with its metrics, never served, and the policy goes back to the reference. Malformed session
logs go to the dead-letter topic.

Offsets live in the manifests. On start (or after a crash, `kill -9` included) the job seeks
every partition to where its newest published version stopped, once it has checked that the
log there is still the one that version read (`check_resume`: the manifests outlive a broker
that restarts empty), and reads the request contexts again from the offsets that version
recorded as the oldest it still held (`requests_from`). It continues from CURRENT's
weights, so a micro-batch lost in a crash is trained once, in the version that publishes it.
No session is trained twice across versions and none is skipped; a session log delivered
twice (the sessions topic is at least once) is recognised by its id, which every manifest
lists, and counted as a duplicate. The replay buffer is the one deliberate exception: it
re-shows earlier examples, and it starts empty after a restart.

One job per model: two would race on its versions and CURRENT. The job holds a Redis lease
(`infra.lease`, `ov:dpo-lease:<model>`), renewed every round; a second copy waits
`lease_wait_s` for it and then refuses, naming the holder, and a job that finds its lease
taken over stops without publishing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import redis
import torch
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from infra.lease import Lease, LeaseHeld
from infra.settings import Settings, redis_client
from onevision.catalog.changes import acceptable
from onevision.catalog.format import Catalog
from onevision.device import resolve_device
from onevision.generator.data import data_for_version
from onevision.generator.image_search import ImageSearch
from onevision.generator.model import EMBED_DIM, GRID_DIM, OneVisionGenerator
from onevision.generator.rank.title_lift import LIFT_FILE, PurchaseList, TitleLift, fit_title_lift
from onevision.registry import current_version, history, load_version
from streaming.catalog_stream import CatalogFollower, changed_states
from streaming.consumer import ConsumerJob
from streaming.event_worker import CATALOG_POLL_S
from streaming.groups import status_key
from streaming.producer import now_ms
from streaming.request_log import ContextJoin, RequestContext
from streaming.schema import SessionLog, parse_session
from training.configs import DPO_GROUP, StreamConfig
from training.dpo import candidate_logprob, dpo_objective
from training.dpo_gate import Gate
from training.generator import publish_derived
from training.point_in_time import point_in_time

log = logging.getLogger(__name__)
GROUP = DPO_GROUP


def lease_key(model: str) -> str:
    return f"ov:dpo-lease:{model}"


@dataclass
class StreamExample:
    request_id: str
    end_ts: int  # the session's last event (ms): its purchase, for freshness
    context: RequestContext
    candidates: np.ndarray  # (1 + max_negatives, L): the purchased item's SID, then negatives; -1 rows pad
    shown: PurchaseList | None = None  # the exposed list, for the title lift's fit


def session_candidates(session: SessionLog, item_row: dict[str, int], item_sids: np.ndarray,
                       max_negatives: int) -> np.ndarray | None:
    """The session's candidate SIDs (positive first), or None when it cannot teach: no purchase
    of a known item, or no negative whose SID differs from the positive's."""
    bought = [item_row[i] for i in session.purchased if i in item_row]
    if not bought:
        return None
    pos = item_sids[bought[0]]
    seen, negs = {tuple(pos)}, []
    for item in session.clicked_not_bought + session.exposed_not_clicked:
        if item in item_row and tuple(item_sids[item_row[item]]) not in seen and len(negs) < max_negatives:
            seen.add(tuple(item_sids[item_row[item]]))
            negs.append(item_sids[item_row[item]])
    if not negs:
        return None
    out = np.full((1 + max_negatives, item_sids.shape[1]), -1, np.int64)
    out[0], out[1:1 + len(negs)] = pos, negs
    return out


class StreamLearner:
    """The policy, its frozen reference and AdamW; one micro-batch update at a time."""

    def __init__(self, search: ImageSearch, reference: OneVisionGenerator, config: StreamConfig):
        self.search, self.config = search, config
        self.levels = reference.vocab.levels
        self.rng = np.random.default_rng(config.seed)
        self.replay: list[StreamExample] = []
        self.reset(reference)

    def reset(self, reference: OneVisionGenerator) -> None:
        """Policy := reference (start, after a rejected candidate, after an operator's rollback)."""
        self.reference = copy.deepcopy(reference).eval().requires_grad_(False)
        self.policy = copy.deepcopy(reference).train().requires_grad_(True)
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=self.config.lr, weight_decay=0.0)

    def accept(self) -> None:
        """The candidate passed the gate: it is the new reference."""
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)

    def loss(self, batch: list[StreamExample]) -> torch.Tensor:
        ctx = [e.context for e in batch]
        prompts = self.search.prompts(np.stack([c.grid for c in ctx]), np.stack([c.embedding for c in ctx]),
                                      [c.user for c in ctx], [c.scene for c in ctx])
        cands = np.stack([e.candidates for e in batch])
        policy, valid = candidate_logprob(self.policy, prompts, cands)
        with torch.no_grad():
            reference, _ = candidate_logprob(self.reference, prompts, cands)
        return dpo_objective(policy, reference, valid, self.config.beta, self.config.nll_weight, self.levels)

    def update(self, examples: list[StreamExample]) -> dict:
        c = self.config
        losses, skipped = [], 0
        self.policy.train()
        for _ in range(c.steps):
            replayed = [self.replay[i] for i in self.rng.choice(len(self.replay), min(c.replay_batch, len(self.replay)),
                                                                replace=False)] if self.replay else []
            loss = self.loss(examples + replayed)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            if not torch.isfinite(norm):
                self.opt.zero_grad(set_to_none=True)
                skipped += 1
                continue
            self.opt.step()
            losses.append(float(loss.detach()))
        self.policy.eval()
        finite = [e for e in examples if np.isfinite(e.context.grid).all() and np.isfinite(e.context.embedding).all()]
        self.replay = (self.replay + finite)[-c.replay:]
        return {"steps": len(losses), "skipped_nonfinite": skipped, "loss": float(np.mean(losses)) if losses else None}


def job_versions(registry: Path, model: str, group: str) -> list[dict]:
    """This job's published versions (accepted and rejected), oldest first."""
    return [r for r in history(registry, model) if (r["stream"] or {}).get("group") == group]


def newest_stream(mine: list[dict], topic: str) -> dict:
    """The stream block of the newest of this job's versions (`job_versions`) on `topic`; {} when none."""
    rows = [r for r in mine if r["stream"].get("topic") == topic]
    return rows[-1]["stream"] if rows else {}


def resume_offsets(mine: list[dict], topic: str) -> tuple[dict[int, int], dict[int, str]]:
    """Where the newest of this job's versions on `topic` stopped: partition -> next offset, and
    partition -> digest of the last session log it read (empty: none yet)."""
    stream = newest_stream(mine, topic)
    return ({int(p): int(o) for p, o in stream.get("through", {}).items()},
            {int(p): d for p, d in stream.get("marks", {}).items()})


def sessions_watermark(mine: list[dict], topic: str) -> int:
    """The latest session end (ms) the newest version trained on: where the context window stood."""
    return max(newest_stream(mine, topic).get("session_end_ts") or [0])


def requests_resume(mine: list[dict], topic: str) -> dict[int, int]:
    """Where the newest version says the request contexts must be read again from (partition ->
    offset; empty: from the start)."""
    return {int(p): int(o) for p, o in newest_stream(mine, topic).get("requests_from", {}).items()}


def digest(value: bytes) -> str:
    return hashlib.sha1(value).hexdigest()[:16]


def check_resume(settings: Settings, topic: str, offsets: dict[int, int], marks: dict[int, str],
                 timeout_s: float = 5.0) -> tuple[dict[int, int], list[int]]:
    """The published offsets that still hold in the topic as it is now, and the partitions that
    start over from 0. The manifests outlive the broker: an embedded broker restarts with empty
    topics, and a topic can be recreated, so a partition whose log at offset - 1 is not the one the
    job read last (by its digest; missing counts as different) is a new log. Its sessions already
    trained are still recognised by id (`TrainedSessions`). Offsets without a digest (versions
    published before digests were kept) are trusted."""
    checked = {p: TopicPartition(topic, p) for p, o in offsets.items() if o > 0 and p in marks}
    if not checked:
        return dict(offsets), []
    consumer = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
    valid, reset = dict(offsets), []
    try:
        for p, tp in checked.items():
            consumer.assign([tp])
            consumer.seek(tp, offsets[p] - 1)  # past the end, the consumer falls back to the earliest log
            deadline, msg = time.monotonic() + timeout_s, None
            while msg is None and time.monotonic() < deadline:
                msg = next(iter(consumer.poll(timeout_ms=500, max_records=1).get(tp, [])), None)
            if msg is None or msg.offset != offsets[p] - 1 or digest(msg.value) != marks[p]:
                valid[p] = 0
                reset.append(p)
    finally:
        consumer.close(autocommit=False)
    return valid, reset


class TrainedSessions:
    """The session ids the job's versions trained on, newest `limit` of them: the sessions topic
    is at least once (a session worker that crashes may send a log again), so a session seen
    here is not trained a second time. Rebuilt from the manifests on start."""

    def __init__(self, limit: int = 200_000):
        self.limit, self.ids, self.order = limit, set(), deque()

    def add(self, ids) -> None:
        for i in ids:
            if i not in self.ids:
                self.ids.add(i)
                self.order.append(i)
        while len(self.order) > self.limit:
            self.ids.discard(self.order.popleft())

    def __contains__(self, session_id: str) -> bool:
        return session_id in self.ids

    @classmethod
    def from_versions(cls, rows: list[dict], limit: int = 200_000) -> "TrainedSessions":
        out = cls(limit)
        for r in rows:  # oldest first, so the newest stay
            out.add(r["stream"].get("session_ids", []))
        return out


class DPOStreamJob(ConsumerJob):
    """Sessions -> micro-batches -> gated versions; the registry's manifests hold its offsets."""

    offsets_home = "the registry"

    def __init__(self, settings: Settings, catalog: Catalog, registry: Path, model: str, cache: Path,
                 config: StreamConfig = StreamConfig(), progress: bool = False, device: str = "cpu"):
        self.settings, self.catalog, self.model, self.config = settings, catalog, model, config
        self.device = resolve_device(device)
        self.registry = Path(registry)
        self.topic, self._cache = settings.kafka.sessions_topic, Path(cache)
        self.redis = redis_client(settings.redis, socket_timeout=10, socket_connect_timeout=2)
        self.lease = Lease(self.redis, lease_key(model), config.lease_ttl_s)
        try:
            self.lease.acquire(config.lease_wait_s)
        except LeaseHeld as err:
            raise LeaseHeld(f"another DPO stream job is training {model}: {err}") from None
        try:
            self._start(progress)
        except BaseException:
            self.lease.release()
            raise

    def _start(self, progress: bool) -> None:
        """Everything after the lease: the models, where to resume, joining the group."""
        settings, model, config = self.settings, self.model, self.config
        self._open(progress)
        mine = job_versions(self.registry, model, config.group)
        offsets, self.marks = resume_offsets(mine, self.topic)
        self.published, reset = check_resume(settings, self.topic, offsets, self.marks)  # partition -> next offset
        if reset:
            log.warning("sessions topic %s partitions %s are not the log the last version read (the broker restarted "
                        "empty or the topic was recreated): reading them from the start", self.topic, reset)
            self.marks = {p: d for p, d in self.marks.items() if p not in reset}
        self.published_marks = dict(self.marks)  # partition -> digest of the log at published offset - 1
        # the request contexts: read again from where the newest version says the oldest one it may
        # still need was, so the sessions after its offsets find theirs (exactly once across a crash)
        self.contexts = ContextJoin(settings, config.join_window_s, config.max_contexts, config.group)
        self.contexts.seek(requests_resume(mine, self.topic) if not reset else {})
        self.contexts.observe(sessions_watermark(mine, self.topic))  # the window where the newest version left it
        self.trained = TrainedSessions.from_versions(mine)
        self.cycle_from: dict[int, int] = dict(self.published)  # where the current micro-batch's sessions start
        self.through: dict[int, int] = dict(self.published)  # next offset after the last session read
        self.pending: list[StreamExample] = []
        self.first_pending: float | None = None
        self.counts = self._zero_counts()
        self.lift_window: deque[PurchaseList] = deque(maxlen=config.lift_window)  # empty after a start
        self.totals = {"versions": 0, "accepted": 0, "rejected": 0, "sessions": 0, "examples": 0}
        self._worked = False  # this round trained or published: no idle exit yet
        super().__init__(settings, self.topic, config.group, max_poll_records=500, session_timeout_ms=10_000,
                         heartbeat_interval_ms=2_500, max_partition_fetch_bytes=8 * 1024 * 1024)

    def write_stats(self) -> None:
        """The job's state in Redis (`ov:<group>:status`, expiring unless refreshed), for
        launchers ("ready") and operators."""
        try:
            self.redis.set(status_key(self.config.group), json.dumps(
                {**self.liveness(), "model": self.model, "reference": self.ref_version, "ts": now_ms(),
                 "pending": len(self.pending), "contexts_held": len(self.contexts.held), **self.totals}), ex=120)
        except redis.RedisError as err:
            log.warning("could not write the job's status to Redis (%s)", err)

    def close(self, clean: bool = True) -> None:
        try:
            super().close(clean)
            self.contexts.close()
            self.catalog_follower.close()
        finally:
            try:
                self.lease.release()
            except redis.RedisError:  # it lapses after lease_ttl_s anyway
                pass

    def holds_lease(self) -> bool:
        """Renew the lease; False (after saying so, and asking the loop to stop) once another job holds it."""
        if self.lease.renew():
            return True
        log.error("the DPO stream lease %s passed to %s: this job stops without publishing",
                  self.lease.key, self.lease.holder())
        self.pending, self.first_pending = [], None
        self.stop()
        return False

    @staticmethod
    def _zero_counts() -> dict[str, int]:
        return {"sessions": 0, "examples": 0, "duplicates": 0, "no_purchase": 0, "no_negative": 0, "no_context": 0,
                "bad_context": 0, "dlq": 0, "caught_up": 0}

    def _open(self, progress: bool) -> None:
        """What the job builds once from CURRENT: prompt building and the catalog's SIDs (`ImageSearch`),
        the gate's data; then CURRENT becomes the reference."""
        path = self._current_path()
        point_in_time(self.catalog, self._cache)  # the gate's val queries read the stats known at their time
        self.search = ImageSearch.from_registry(path, self.catalog, self.device)
        model = self.search.searcher.model
        self.gate = Gate(data_for_version(self.catalog, path, self._cache, progress), model, self.config.gate)
        self.item_row = {item: i for i, item in enumerate(self.search.item_ids)}
        # launched items: sessions that bought one are examples too (the follower reads the catalog's changes)
        self.catalog_follower = CatalogFollower(self.settings, client_id=f"{self.config.group}-catalog",
                                                keep_photos=False)
        self._catalog_polled = 0.0
        self._take_catalog(catch_up=True)
        self._set_reference(path, model)

    def _take_catalog(self, catch_up: bool = False) -> None:
        """Catalog changes into the job's items (a launched item's SID is a session's positive); a
        read or a batch that fails is logged and the job carries on with the items it had."""
        self._catalog_polled = time.monotonic()
        f = self.catalog_follower
        try:
            changes = f.catch_up() if catch_up else f.poll(0)
            if changes:
                states, _ = acceptable(changed_states(f, changes), self.search.expects())
                self.search.apply_changes(states)
                self.item_row = {item: i for i, item in enumerate(self.search.item_ids)}
        except Exception:  # noqa: BLE001 - the broker away, or a change that cannot be built: next poll
            log.exception("catalog changes not taken; the job keeps its items")

    def _current_path(self) -> Path:
        version = current_version(self.registry, self.model)
        if version is None:
            raise FileNotFoundError(f"{self.registry / self.model} has no CURRENT version to improve: train it first "
                                    "(onevision train all)")
        return self.registry / self.model / version

    def _set_reference(self, path: Path, model: OneVisionGenerator | None = None) -> None:
        """`path` (a version of the model) is the reference: its weights, its gate scores and its lineage's anchor."""
        manifest, cfg = load_version(path)
        reference = model if model is not None else OneVisionGenerator.load(path, cfg).to(self.device)
        self.ref_version, self.ref_manifest, self.ref_config = path.name, manifest, cfg
        stored = self.gate.stored(manifest.get("gate", {}))
        if stored is None:  # never gated, or by another search: scored now, and the lineage's anchor restarts here
            self.ref_scores = self.anchor_scores = self.gate.score(reference)
        else:
            self.ref_scores, self.anchor_scores = stored  # the anchor: where this lineage started
        self.learner = StreamLearner(self.search, reference, self.config)
        self.ref_lift = TitleLift.of_version(path)
        log.info("reference %s/%s: %s", self.model, self.ref_version, self.ref_scores)

    # ---- Kafka --------------------------------------------------------------------------------
    def on_partitions_assigned(self, assigned):
        self.seek_stored(assigned, self.published, rebuild_missing=False)
        log.info("assigned %s (resuming at %s)", sorted(tp.partition for tp in assigned), self.published)

    def on_partitions_revoked(self, revoked):
        # what was read since the last publish is not trained yet: drop it, and read it again
        # from the published offsets wherever the partitions go next
        self.pending, self.first_pending, self.counts = [], None, self._zero_counts()
        self.cycle_from, self.through = dict(self.published), dict(self.published)
        self.marks = dict(self.published_marks)

    def _read(self, records) -> None:
        sessions: list[SessionLog] = []
        for tp, msgs in records.items():
            for m in msgs:
                self.cycle_from.setdefault(tp.partition, m.offset)
                self.through[tp.partition] = m.offset + 1
                self.marks[tp.partition] = digest(m.value)
                try:
                    sessions.append(parse_session(m.value))  # EventError: a ValueError
                except (ValidationError, ValueError) as exc:
                    self.counts["dlq"] += 1
                    self.send_dead_letter(self.dead_letter(m, "malformed session log", str(exc)[:500]))
        self.counts["sessions"] += len(sessions)
        if any(i not in self.item_row and i not in self.catalog_follower.states  # launched since the last poll?
               for s in sessions for i in s.purchased):
            self._take_catalog(catch_up=True)
        useful = []
        pending = {e.request_id for e in self.pending}
        for s in sessions:
            # a redelivered log (a session's id is its request's)
            if s.request_id in self.trained or s.request_id in pending:
                self.counts["duplicates"] += 1
                continue
            pending.add(s.request_id)
            cands = session_candidates(s, self.item_row, self.search.searcher.item_sids, self.config.max_negatives)
            if cands is None:
                self.counts["no_purchase" if not s.purchased else "no_negative"] += 1
            else:
                useful.append((s, cands))
        if useful:
            self.contexts.observe(max(s.end_ts for s, _ in useful))
            self.contexts.catch_up(heartbeat=self.lease.renew)  # a session's context was produced before it closed
        grid_shape = (self.search.searcher.model.tokens.n_visual - 1, GRID_DIM)  # n_visual: the grid + the pooled
        for (s, cands), ctx in zip(useful, self.contexts.get([s.request_id for s, _ in useful])):
            if ctx is None:
                self.counts["no_context"] += 1
                continue
            if ctx.grid.shape != grid_shape or ctx.embedding.shape != (EMBED_DIM,):
                self.counts["bad_context"] += 1  # another encoder's, or forged: it would break the batch
                continue
            self.pending.append(StreamExample(s.request_id, s.end_ts, ctx, cands, self._purchase_list(s, ctx)))
            self.counts["examples"] += 1
            self.first_pending = self.first_pending or time.monotonic()

    def _purchase_list(self, session: SessionLog, ctx: RequestContext) -> PurchaseList | None:
        """The session's exposed list with each item's cosine to the photo (items the job does not
        know are left out), for the title lift."""
        shown = [i for i in session.exposed if i in self.item_row]
        if not self.config.lift or len(shown) < 2:
            return None
        emb = np.asarray(self.search.searcher.item_embedding[[self.item_row[i] for i in shown]], np.float32)
        cosine = emb @ ctx.embedding.astype(np.float32)
        if not np.isfinite(cosine).all():  # a forged or broken context: it would poison the fit
            return None
        return PurchaseList(tuple(shown), frozenset(session.purchased), cosine)

    def _fit_lift(self) -> TitleLift | None:
        """The title lift of the newest purchase sessions (this micro-batch's included); the
        reference's while the window holds too few."""
        if not self.config.lift:
            return None
        window = list(self.lift_window) + [e.shown for e in self.pending if e.shown is not None]
        if len(window) < self.config.lift_min_sessions:
            return self.ref_lift
        frame = self.search.served.items.frame
        titles = dict(zip(frame["item_id"], frame["title"]))
        return fit_title_lift(window, titles, self.search.config.similarity_weight, self.config.lift_fit,
                              beta=self._lift_beta())

    def _lift_beta(self) -> float | None:
        """The similarity's coefficient the lift is fitted with: the reference lift's, so a lineage
        measures it once, in its first fit (on lists no lift had ordered yet), and keeps it; None
        (fitted) without a reference lift or with `lift_keep_beta` off. Refitted every time, it is
        measured on lists the lift itself ordered: its items are bought at lower cosines, beta falls,
        the bonuses grow, and the loop feeds itself."""
        if not self.config.lift_keep_beta or self.ref_lift is None:
            return None
        beta = self.ref_lift.fit.get("beta")
        return max(float(beta), self.config.lift_fit.min_beta) if isinstance(beta, (int, float)) else None

    # ---- one micro-batch --------------------------------------------------------------------
    def cycle(self) -> dict:
        """Train on the pending examples, gate the candidate, publish it; returns its row."""
        current = self._current_path()
        if current.name != self.ref_version:  # an operator promoted or rolled back
            log.info("CURRENT moved from %s to %s: training from it", self.ref_version, current.name)
            self._set_reference(current)
        t0 = time.perf_counter()
        stats = self.learner.update(self.pending)
        t1 = time.perf_counter()
        lift = self._fit_lift()
        t2 = time.perf_counter()
        self.lease.renew()  # training and the gate can take a while
        scores = self.gate.score(self.learner.policy)
        t3 = time.perf_counter()
        verdict = self.gate.judge(scores, self.ref_scores, self.anchor_scores)
        if not self.holds_lease():  # another job may have published meanwhile: this candidate's parent is stale
            return {}
        if self._current_path().name != self.ref_version:  # CURRENT moved while training (an operator, or a job
            return {}  # that held the lease while ours lapsed): the next round trains again from the new CURRENT
        stream = {"topic": self.topic, "group": self.config.group, "from": dict(self.cycle_from),
                  "through": dict(self.through), "marks": dict(self.marks), **self.counts, **stats,
                  "session_ids": [e.request_id for e in self.pending],
                  "session_end_ts": [e.end_ts for e in self.pending], "published_ms": now_ms(),
                  "requests_from": self.contexts.resume_offsets(), "contexts": dict(self.contexts.counts),
                  "train_seconds": round(time.perf_counter() - t0, 2),
                  "seconds": {"update": round(t1 - t0, 2), "lift": round(t2 - t1, 2), "gate": round(t3 - t2, 2)},
                  "config": asdict(self.config)}  # where a version's cycle goes: what bounds the job's throughput
        version = self._publish(verdict, stream, lift)
        self.commit(self.through)
        self.lift_window.extend(e.shown for e in self.pending if e.shown is not None)
        if verdict.accepted:
            self.learner.accept()
            self.ref_version, self.ref_scores, self.ref_lift = version.name, verdict.candidate, lift
        else:
            self.learner.reset(self.learner.reference)
        self.totals["versions"] += 1
        self.totals["accepted" if verdict.accepted else "rejected"] += 1
        self.totals["sessions"] += self.counts["sessions"]
        self.totals["examples"] += self.counts["examples"]
        log.info("%s %s: %d examples, loss %s, gate %s %s", version.name,
                 "accepted" if verdict.accepted else "REJECTED", self.counts["examples"], stats["loss"],
                 verdict.candidate, "; ".join(verdict.reasons))
        self.trained.add(e.request_id for e in self.pending)
        self.published, self.published_marks = dict(self.through), dict(self.marks)
        self.cycle_from = dict(self.through)
        self.pending, self.first_pending, self.counts = [], None, self._zero_counts()
        return {"version": version.name, "accepted": verdict.accepted, **stats}

    def _publish(self, verdict, stream: dict, lift: TitleLift | None) -> Path:
        metrics = {"gate": verdict.candidate,
                   "confidence_threshold": self.ref_manifest["metrics"].get("confidence_threshold", 0.0)}
        if lift is not None:
            metrics["title_lift"] = {**lift.fit, "top": lift.top(10)}
        with tempfile.TemporaryDirectory() as tmp:
            files = {LIFT_FILE: lift.save(Path(tmp) / LIFT_FILE)} if lift is not None else None
            return publish_derived(self.registry, self.registry / self.model / self.ref_version, self.ref_config,
                                   self.learner.policy, "dpo-stream", metrics, make_current=verdict.accepted,
                                   files=files, extra={"status": "accepted" if verdict.accepted else "rejected",
                                                       "gate": self.gate.record(verdict), "stream": stream})

    # ---- the loop -----------------------------------------------------------------------------
    def run(self, max_idle_s: float | None = None, install_signals: bool = True) -> dict:
        """Consume until stopped (SIGTERM/SIGINT) or, with `max_idle_s`, that long without sessions
        and nothing left to train. What was read but not yet published is simply read again next
        time, so stopping never loses a session. Returns the totals."""
        super().run(max_idle_s, install_signals)
        return self.totals

    def tick(self) -> None:
        try:
            if not self.holds_lease():
                return
        except redis.RedisError as err:  # checked again, strictly, before publishing
            log.warning("could not renew the DPO stream lease (%s)", err)
        if time.monotonic() - self._catalog_polled >= CATALOG_POLL_S:
            self._take_catalog()
        # never read past one micro-batch: its offsets are exactly what it trained on
        records = self.consumer.poll(timeout_ms=500, max_records=max(1, self.config.micro_batch - len(self.pending)))
        if records:
            self._read(records)
            self.active()
        else:  # keep up with the request contexts meanwhile
            self.contexts.catch_up(heartbeat=self.lease.renew)
        due = self.pending and (len(self.pending) >= self.config.micro_batch
                                or time.monotonic() - self.first_pending >= self.config.max_wait_s)
        self._worked = bool(due) or self.stats_due()
        if due:
            self._take_waiting()
            self.cycle()
        if self._worked:
            self.publish_stats()

    def _take_waiting(self) -> None:
        """Behind (sessions already on the topic as a micro-batch falls due)? Read them into it, up
        to `catch_up_batch` examples (one at or below `micro_batch`: off). Only what was there at
        this moment: a job that keeps up is not held back by sessions still arriving. Read sessions
        never outnumber the room left, so the version's offsets stay exactly what it trains on."""
        cap = max(self.config.catch_up_batch, self.config.micro_batch)
        tps = list(self.consumer.assignment())
        if len(self.pending) >= cap or not tps:
            return
        ends, before = self.consumer.end_offsets(tps), len(self.pending)
        while len(self.pending) < cap and any(self.consumer.position(tp) < ends[tp] for tp in tps):
            records = self.consumer.poll(timeout_ms=500, max_records=cap - len(self.pending))
            if not records:
                break
            self._read(records)
        self.counts["caught_up"] += len(self.pending) - before

    def idle_done(self) -> bool:
        return not self._worked and not self.pending and bool(self.consumer.assignment())
