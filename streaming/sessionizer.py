"""Closes image-search requests into session logs: what was shown, clicked and bought, and
what the user's features were when the request came in (the DPO job's training unit).

A session is opened by its first exposure (keyed by request_id) and closed when event time in
its partition has moved `timeout_ms` past its last event, or when it has been idle for
`idle_s` of wall-clock time (live traffic that stops). Clicks or orders for a request with no
open session (never shown, or already closed) still update features but open nothing.
Open sessions are persisted per partition with the worker's state, so a restart resumes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from streaming.schema import Event
from streaming.user_state import UserState


@dataclass
class OpenSession:
    request_id: str
    user_id: str
    scene: str
    start_ts: int
    last_ts: int
    variant: str | None
    experiment: str | None
    exposed: list[tuple[int, str]] = field(default_factory=list)  # (position, item)
    clicked: list[str] = field(default_factory=list)
    ordered: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)  # the user's short-term items at request time
    long: list[tuple[int, str, int]] = field(default_factory=list)  # and long-term history
    touched: float = 0.0  # wall clock of the last event (not persisted)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("touched")
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "OpenSession":
        d = json.loads(raw)
        d["exposed"] = [tuple(x) for x in d["exposed"]]
        d["long"] = [tuple(x) for x in d["long"]]
        return cls(**d, touched=time.monotonic())

    def outcome(self) -> dict[str, list[str]]:
        shown = [item for _, item in sorted(self.exposed, key=lambda x: x[0])]
        bought = list(dict.fromkeys(self.ordered))
        clicked = [i for i in dict.fromkeys(self.clicked) if i not in bought]
        exposed_not_clicked = [i for i in dict.fromkeys(shown) if i not in bought and i not in clicked]
        return {"exposed": shown, "purchased": bought, "clicked_not_bought": clicked,
                "exposed_not_clicked": exposed_not_clicked}


class Sessionizer:
    def __init__(self, scenes: tuple[str, ...] = ("image_search",), timeout_ms: int = 30 * 60_000,
                 idle_s: float = 60.0):
        self.scenes, self.timeout_ms, self.idle_s = scenes, timeout_ms, idle_s
        self.open: dict[int, dict[str, OpenSession]] = {}
        self.watermark: dict[int, int] = {}
        self.changed: dict[int, set[str]] = {}
        self.closed: dict[int, set[str]] = {}

    def load(self, partition: int, sessions: dict[str, OpenSession]) -> None:
        self.open[partition] = sessions
        self.watermark[partition] = max((s.last_ts for s in sessions.values()), default=0)

    def drop(self, partition: int) -> None:
        for d in (self.open, self.watermark, self.changed, self.closed):
            d.pop(partition, None)

    def observe(self, partition: int, e: Event, user: UserState) -> None:
        """Take one event; call before the event is applied to `user` (the snapshot is the
        user's features as the request saw them)."""
        self.watermark[partition] = max(self.watermark.get(partition, 0), e.ts)
        if e.scene not in self.scenes or not e.request_id:
            return
        sessions = self.open.setdefault(partition, {})
        s = sessions.get(e.request_id)
        if s is None:
            if e.type != "exposure":
                return
            s = sessions[e.request_id] = OpenSession(
                e.request_id, e.user_id, e.scene, e.ts, e.ts, e.variant, e.experiment,
                short=[item for _, item in user.short], long=list(user.long))
        if e.type == "exposure":
            s.exposed.append((e.position if e.position is not None else len(s.exposed), e.item_id))
        elif e.type == "click":
            s.clicked.append(e.item_id)
        else:
            s.ordered.append(e.item_id)
        s.last_ts, s.touched = max(s.last_ts, e.ts), time.monotonic()
        self.changed.setdefault(partition, set()).add(e.request_id)

    def checkpoint(self, partition: int, request_id: str | None) -> Callable[[], None]:
        """What undoes an `observe` of an event of `request_id` in `partition` that is about to happen."""
        watermark = self.watermark.get(partition)
        had_open, had_changed = partition in self.open, partition in self.changed
        s = self.open.get(partition, {}).get(request_id) if request_id else None
        saved = replace(s, exposed=list(s.exposed), clicked=list(s.clicked), ordered=list(s.ordered)) if s else None
        was_changed = request_id in self.changed.get(partition, ())

        def undo() -> None:
            if watermark is None:
                self.watermark.pop(partition, None)
            else:
                self.watermark[partition] = watermark
            if not had_open:
                self.open.pop(partition, None)
            elif request_id:
                if saved is None:
                    self.open[partition].pop(request_id, None)
                else:
                    self.open[partition][request_id] = saved
            if not had_changed:
                self.changed.pop(partition, None)
            elif not was_changed:
                self.changed[partition].discard(request_id)

        return undo

    def close_due(self, idle: bool = True) -> list[OpenSession]:
        """Sessions whose time is up (removed from the open set, remembered for the state write)."""
        now = time.monotonic()
        done = []
        for p, sessions in self.open.items():
            cutoff = self.watermark.get(p, 0) - self.timeout_ms
            for rid in [r for r, s in sessions.items()
                        if s.last_ts < cutoff or (idle and now - s.touched > self.idle_s)]:
                done.append(sessions.pop(rid))
                self.closed.setdefault(p, set()).add(rid)
                self.changed.get(p, set()).discard(rid)
        return done

    def close_all(self) -> list[OpenSession]:
        for sessions in self.open.values():
            for s in sessions.values():
                s.touched = float("-inf")
        return self.close_due()

    def take_changes(self) -> tuple[dict[int, dict[str, str]], dict[int, set[str]]]:
        """(partition -> request_id -> JSON of changed open sessions, partition -> closed ids)."""
        changed = {p: {r: self.open[p][r].to_json() for r in rids if r in self.open.get(p, {})}
                   for p, rids in self.changed.items()}
        closed = self.closed
        self.changed, self.closed = {}, {}
        return changed, closed
