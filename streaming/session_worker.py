"""The sessions role: behaviour events -> one log per closed search session (what was shown,
clicked and bought, with the user's features at request time) on onevision.sessions, for the
near-streaming DPO job. Its own group, so producing logs never slows feature freshness; open
sessions are stored per partition in the same transaction as the offsets."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from infra.settings import Settings
from onevision.behaviour.long_term import long_sids
from onevision.items import ItemTable
from streaming.event_worker import EventWorker, Queue
from streaming.producer import send_session
from streaming.schema import Event, SessionLog, UserSnapshot
from streaming.sessionizer import OpenSession, Sessionizer
from streaming.user_state import UserState
from streaming.worker_config import WorkerConfig


class SessionWorker(EventWorker):
    role = "sessions"

    def __init__(self, settings: Settings, table: ItemTable, config: WorkerConfig | None = None):
        c = config or WorkerConfig(role=self.role)
        self.sessions = Sessionizer(c.session_scenes, int(c.session_timeout_s * 1000), c.session_idle_s)
        super().__init__(settings, table, c)

    def checkpoint(self, partition: int, e: Event) -> Callable[[], None]:
        return self.sessions.checkpoint(partition, e.request_id)

    def observe(self, partition: int, e: Event, user: UserState) -> None:
        self.sessions.observe(partition, e, user)

    def due(self, close_sessions: bool) -> list[OpenSession]:
        return self.sessions.close_due() if close_sessions else []

    def flush_when_idle(self) -> bool:
        return bool(self.sessions.open)

    def assigned(self, partitions: list[int]) -> None:
        for p in partitions:
            raw = self._retry(partial(self.redis.hgetall, f"{self.ns}:sessions:{p}"))
            self.sessions.load(p, {k.decode(): OpenSession.from_json(v) for k, v in raw.items()})

    def revoked(self, partitions: list[int]) -> None:
        for p in partitions:
            self.sessions.drop(p)

    def role_writes(self, due: list[OpenSession]) -> Queue:
        """The closed sessions' logs to Kafka now; open sessions' changes into the transaction."""
        logs = self._session_logs(due)
        for s in logs:
            send_session(self.producer, self.settings, s)
        if logs:
            self.producer.flush()
        self.stats["sessions"] += len(logs)
        changed, gone = self.sessions.take_changes()

        def queue(pipe) -> None:
            for p, sess in changed.items():
                if sess:
                    pipe.hset(f"{self.ns}:sessions:{p}", mapping=sess)
            for p, rids in gone.items():
                if rids:
                    pipe.hdel(f"{self.ns}:sessions:{p}", *rids)

        return queue

    def _session_logs(self, closed: list[OpenSession]) -> list[SessionLog]:
        if not closed:
            return []
        t = self.table
        longs = long_sids(t, [s.long for s in closed], self.config.long_term)
        return [SessionLog(session_id=s.request_id, request_id=s.request_id, user_id=s.user_id, scene=s.scene,
                           start_ts=s.start_ts, end_ts=s.last_ts, variant=s.variant, experiment=s.experiment,
                           user_features=UserSnapshot(short_sids=[t.sid(i) for i in s.short], long_sid=ls or []),
                           **s.outcome())
                for s, ls in zip(closed, longs)]
