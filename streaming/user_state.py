"""What a worker remembers per user between events, small enough to live in Redis beside the
features it produces (so a restarted worker resumes exactly where the last commit left it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

SEEN_LEN = 32  # recent event ids, so a producer's retried duplicate is not counted twice


@dataclass
class UserState:
    short: list[tuple[int, str]] = field(default_factory=list)  # (ts, item_id), newest first
    long: list[tuple[int, str, int]] = field(default_factory=list)  # (ts, item_id, CLICK|ORDER), oldest first
    seen: list[str] = field(default_factory=list)
    last_ts: int = 0

    def copy(self) -> "UserState":
        """An independent copy: an event is applied to it, and it replaces this state only if
        that worked."""
        return UserState(list(self.short), list(self.long), list(self.seen), self.last_ts)

    def to_bytes(self) -> bytes:
        return json.dumps([self.short, self.long, self.seen, self.last_ts], separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "UserState":
        if not raw:
            return cls()
        short, long, seen, last_ts = json.loads(raw)
        return cls([tuple(s) for s in short], [tuple(x) for x in long], seen, last_ts)

    def first_sight(self, event_id: str) -> bool:
        """True the first time an event id is seen (and remembers it)."""
        if event_id in self.seen:
            return False
        self.seen.append(event_id)
        if len(self.seen) > SEEN_LEN:
            del self.seen[0]
        return True
