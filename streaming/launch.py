"""Feature and session workers as managed background processes (pid file and log under the
state dir), for the quickstart and `onevision stream start | stop`."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import redis

from infra.process import ManagedProcess
from infra.settings import Settings
from streaming.worker import ROLE_GROUPS, namespace


def worker_argv(items: Path, role: str = "features", long_term: str = "mean", group: str = "",
                log_level: str = "INFO", session_idle_s: float = 60.0) -> list[str]:
    """The command line of one `onevision stream worker` process."""
    argv = [sys.executable, "-m", "onevision_cli.main", "stream", "worker", "--items", str(Path(items).resolve()),
            "--role", role, "--long-term", long_term, "--log-level", log_level, "--session-idle", str(session_idle_s)]
    return argv + (["--group", group] if group else [])


def _published(settings: Settings, group: str, pid: int | None) -> bool:
    """The worker with this pid has started and written its stats to Redis."""
    if pid is None:
        return False
    raw = redis.Redis.from_url(settings.redis.url, socket_timeout=2).hget(
        f"{namespace(group)}:workers", f"{socket.gethostname()}-{pid}")
    return raw is not None and bool(json.loads(raw))


def worker_process(settings: Settings, role: str, items: Path, index: int = 0, long_term: str = "mean",
                   session_idle_s: float = 60.0) -> ManagedProcess:
    group = ROLE_GROUPS[role]
    proc = ManagedProcess(
        name=f"stream-{role}-{index}", state_dir=settings.resolved_state_dir(), host="-", port=None,
        argv=worker_argv(items, role, long_term, session_idle_s=session_idle_s),
        healthy=lambda: _published(settings, group, proc.pid()), env=settings.to_env())
    return proc


def start_workers(settings: Settings, items: Path, features: int = 1, sessions: int = 1, long_term: str = "mean",
                  timeout: float = 90.0, session_idle_s: float = 60.0) -> list[dict]:
    """`session_idle_s`: wall-clock seconds without events that close a session (and send its
    log to the DPO job): shorter means fresher training data, longer catches late orders."""
    procs = [worker_process(settings, "features", items, i, long_term) for i in range(features)]
    procs += [worker_process(settings, "sessions", items, i, long_term, session_idle_s) for i in range(sessions)]
    for p in procs:
        p.start(timeout)
    return [p.status() for p in procs]


def stop_workers(settings: Settings) -> list[str]:
    """Stop every worker started this way (TERM: each flushes and commits first)."""
    stopped = []
    for pid_file in sorted(settings.resolved_state_dir().glob("stream-*/stream-*.pid")):
        name = pid_file.stem
        role = name.split("-")[1]
        proc = ManagedProcess(name=name, state_dir=settings.resolved_state_dir(), host="-", port=None, argv=[],
                              healthy=lambda: True)
        if role in ROLE_GROUPS and proc.stop(timeout=30):
            stopped.append(name)
    return stopped
