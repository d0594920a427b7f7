"""The consumer groups of the stream jobs and their Redis namespaces, in a module that imports
nothing: the workers, `stream status`, serving's health check and training's DPO job name them
from here."""

from __future__ import annotations

DEFAULT_GROUP = "onevision-features"
SESSIONS_GROUP = "onevision-sessions"
DPO_GROUP = "onevision-dpo"  # the near-streaming DPO job
ROLE_GROUPS = {"features": DEFAULT_GROUP, "sessions": SESSIONS_GROUP}  # each worker role its own group


def namespace(group: str) -> str:
    return f"ov:{group}"


def status_key(group: str) -> str:
    """Where a job without a workers hash (the DPO job) keeps its liveness row."""
    return f"{namespace(group)}:status"
