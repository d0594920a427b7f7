"""Feature and session workers as managed processes (pid file and log under the state dir): in
the background (`start_workers`, `stop_workers`), or in the foreground, stopped together
(`run_workers`). Each runs `streaming.run_worker` under `infra.supervise`, which restarts a
worker that crashes; the managed pid is the supervisor's."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from infra.process import ManagedProcess, module_argv
from infra.settings import Settings, redis_client
from infra.supervise import supervise_argv
from onevision.behaviour.long_term import LongTermConfig
from streaming.run_worker import WorkerRun
from streaming.status import judged
from streaming.worker_config import ROLE_GROUPS, WorkerConfig, namespace


def worker_argv(items: Path, role: str = WorkerConfig.role, long_term: str = LongTermConfig.mode,
                group: str = WorkerConfig.group, log_level: str = WorkerRun.log_level,
                session_idle_s: float = WorkerConfig.session_idle_s) -> list[str]:
    """The command line of one worker process (its items path absolute: the process runs elsewhere)."""
    config = WorkerConfig(role=role, group=group, long_term=LongTermConfig(mode=long_term),
                          session_idle_s=session_idle_s)
    return module_argv("streaming.run_worker", WorkerRun(Path(items).resolve(), config, log_level=log_level))


def _published(settings: Settings, group: str, pid: int | None) -> bool:
    """A worker started by the supervisor with this pid runs and says so in Redis (a fresh stats
    row: after a restart the worker has a new pid, its supervisor the same)."""
    if pid is None:
        return False
    rows = redis_client(settings.redis, socket_timeout=2).hvals(f"{namespace(group)}:workers")
    now = time.time() * 1000
    return any((w := judged(json.loads(raw), now)) is not None and w["alive"] and w.get("supervisor_pid") == pid
               and w.get("host") == socket.gethostname() for raw in rows)


def worker_process(settings: Settings, role: str, items: Path, index: int = 0, long_term: str = LongTermConfig.mode,
                   session_idle_s: float = WorkerConfig.session_idle_s, group: str = "") -> ManagedProcess:
    """One supervised worker of `role`, in the role's consumer group unless `group` names another."""
    group = group or ROLE_GROUPS[role]
    proc = ManagedProcess(
        name=f"stream-{role}-{index}", state_dir=settings.resolved_state_dir(), host="-", port=None,
        argv=supervise_argv(worker_argv(items, role, long_term, group, session_idle_s=session_idle_s)),
        healthy=lambda: _published(settings, group, proc.pid()), env=settings.to_env())
    return proc


def worker_processes(settings: Settings, items: Path, features: int = 1, sessions: int = 1,
                     long_term: str = LongTermConfig.mode,
                     session_idle_s: float = WorkerConfig.session_idle_s) -> list[ManagedProcess]:
    """`session_idle_s`: wall-clock seconds without events that close a session (and send its
    log to the DPO job): shorter means fresher training data, longer catches late orders."""
    procs = [worker_process(settings, "features", items, i, long_term) for i in range(features)]
    return procs + [worker_process(settings, "sessions", items, i, long_term, session_idle_s) for i in range(sessions)]


def start_workers(settings: Settings, items: Path, features: int = 1, sessions: int = 1,
                  long_term: str = LongTermConfig.mode, timeout: float = 90.0,
                  session_idle_s: float = WorkerConfig.session_idle_s) -> list[dict]:
    """Start workers in the background (or adopt running ones); their status rows once healthy."""
    procs = worker_processes(settings, items, features, sessions, long_term, session_idle_s)
    for p in procs:
        p.start(timeout)
    return [p.status() for p in procs]


def run_workers(settings: Settings, items: Path, features: int = 1, sessions: int = 1,
                long_term: str = LongTermConfig.mode, timeout: float = 90.0,
                started: Callable[[list[dict]], None] | None = None) -> int:
    """Run workers in the foreground: start them (tied to this process), report their status rows
    to `started`, wait until they have all exited or Ctrl-C / TERM arrives, then stop them all
    (TERM: each flushes and commits first). Returns the highest exit status."""
    procs = worker_processes(settings, items, features, sessions, long_term)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # TERM stops them like Ctrl-C
    try:
        for p in procs:
            p.start(timeout, tie_to_parent=True)
        if started is not None:
            started([p.status() for p in procs])
        while any(p.pid() is not None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.stop(timeout=30)
        signal.signal(signal.SIGTERM, previous)
    return max((p.exit_code() or 0 for p in procs), default=0)


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
