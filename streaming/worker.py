"""The stream workers, by role: `FeatureWorker` (behaviour events -> Feast features in Redis)
and `SessionWorker` (events -> session logs), both `EventWorker`s on the `ConsumerJob` base;
`worker_for` picks the class of a config's role."""

from __future__ import annotations

from infra.settings import Settings
from onevision.items import ItemTable
from streaming.event_worker import EventWorker, tune_gc
from streaming.feature_worker import FeatureWorker
from streaming.session_worker import SessionWorker
from streaming.worker_config import DEFAULT_GROUP, ROLE_GROUPS, SESSIONS_GROUP, WorkerConfig, namespace

ROLES: dict[str, type[EventWorker]] = {"features": FeatureWorker, "sessions": SessionWorker}


def worker_for(settings: Settings, table: ItemTable, config: WorkerConfig | None = None) -> EventWorker:
    """The worker of `config.role`."""
    config = config or WorkerConfig()
    if config.role not in ROLES:
        raise ValueError(f"worker role must be one of {tuple(ROLES)}, not {config.role!r}")
    return ROLES[config.role](settings, table, config)


__all__ = ["DEFAULT_GROUP", "ROLES", "ROLE_GROUPS", "SESSIONS_GROUP", "EventWorker", "FeatureWorker", "SessionWorker",
           "WorkerConfig", "namespace", "tune_gc", "worker_for"]
