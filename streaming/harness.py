"""Stream workers driven and observed from outside, as the integration tests and bench/chaos.py
do: spawn one as a plain process (to `kill -9` it), see how many events a group has applied and
stored, and dump what a run left in Redis so that two runs compare byte for byte."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pandas as pd

from infra.settings import Settings, redis_client
from onevision.items import ItemTable
from streaming.launch import worker_argv
from streaming.worker_config import WorkerConfig, namespace

# Per-process bookkeeping that differs between two runs by construction (liveness rows, fencing
# epochs), never part of a comparison of what the runs computed.
BOOKKEEPING = (b":workers", b":status", b":epoch")


def write_items(table: ItemTable, path: Path) -> Path:
    """The item table as the parquet a worker process reads (`--items`)."""
    pd.DataFrame({"item_id": table.item_ids, "sid": list(table.sids), "vector": list(table.vectors)}).to_parquet(path)
    return path


def spawn_worker(settings: Settings, items: Path, group: str, role: str = WorkerConfig.role,
                 session_idle_s: float = WorkerConfig.session_idle_s, log: Path | None = None) -> subprocess.Popen:
    """One worker process of `role` in `group` (its output to `log`, else discarded)."""
    env = {**os.environ, **settings.to_env()}
    out = open(log, "ab") if log else subprocess.DEVNULL  # the child keeps its own copy
    try:
        return subprocess.Popen(worker_argv(items, role=role, group=group, log_level="WARNING",
                                            session_idle_s=session_idle_s),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()


def applied(settings: Settings, group: str) -> int:
    """Events applied and stored (the sum of the offsets the group stored with its state)."""
    r = redis_client(settings.redis)
    try:
        return sum(int(v) for v in r.hvals(f"{namespace(group)}:offsets"))
    finally:
        r.close()


def wait_applied(settings: Settings, group: str, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while (done := applied(settings, group)) < n:
        if time.time() > deadline:
            raise TimeoutError(f"group {group}: only {done} of {n} events applied in {timeout:.0f} s")
        time.sleep(0.25)


def dump(settings: Settings, group: str | None = None) -> dict[bytes, object]:
    """Everything in the settings' Redis db but bookkeeping; with `group`, its namespace made
    neutral (`ov:*:`) so that runs under different group names compare."""
    r = redis_client(settings.redis)
    out: dict[bytes, object] = {}
    try:
        for key in r.scan_iter(count=1000):
            if key.endswith(BOOKKEEPING):
                continue
            kind = r.type(key)
            value = r.hgetall(key) if kind == b"hash" else r.get(key)
            out[key.replace(f"{namespace(group)}:".encode(), b"ov:*:") if group else key] = value
    finally:
        r.close()
    return out
