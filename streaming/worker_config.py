"""The stream workers' settings and names, kept apart from the workers so that the CLI and the
launchers read them (defaults included) without importing Kafka, Redis or Feast."""

from __future__ import annotations

from dataclasses import dataclass, field

from onevision.behaviour.long_term import LongTermConfig
from onevision.behaviour.short_term import SCENE
from onevision.generator.sid_items import S_CONV_WEIGHTS
from streaming.groups import DEFAULT_GROUP, ROLE_GROUPS, SESSIONS_GROUP, namespace

__all__ = ["DEFAULT_GROUP", "ROLE_GROUPS", "SESSIONS_GROUP", "ItemStatsConfig", "WorkerConfig", "namespace"]


@dataclass(frozen=True)
class ItemStatsConfig:
    window_days: int = 30
    w_clicks: float = S_CONV_WEIGHTS[0]  # eq. 13 weights: clicks, GMV and orders in the window
    w_gmv: float = S_CONV_WEIGHTS[1]
    w_orders: float = S_CONV_WEIGHTS[2]


@dataclass
class WorkerConfig:
    """`role` features: user and item features into Feast/Redis (the hot path, group
    onevision-features); sessions: session logs onto onevision.sessions (its own group, so
    producing logs never slows feature freshness). Both keep per-user state."""

    role: str = "features"
    group: str = ""  # default: onevision-features / onevision-sessions by role
    flush_events: int = 20_000  # flush after this many events ...
    flush_interval_s: float = 0.25  # ... or this long after the first unflushed one
    max_poll_records: int = 5_000
    long_term: LongTermConfig = field(default_factory=LongTermConfig)
    item_stats: ItemStatsConfig = field(default_factory=ItemStatsConfig)
    session_scenes: tuple[str, ...] = (SCENE,)
    session_timeout_s: float = 30 * 60  # event time
    session_idle_s: float = 60.0  # wall clock
    max_cached_users: int = 200_000
    kafka_session_timeout_ms: int = 6_000  # how soon a killed worker's partitions move on
    worker_id: str = ""  # default: <host>-<pid> of the process the worker runs in
