"""The near-streaming DPO job as a managed background process (pid file and log under the state
dir), for the quickstart and the closed-loop benchmark; it runs `training.run_dpo_stream` under
`infra.supervise` (restarted after a crash; the managed pid is the supervisor's)."""

from __future__ import annotations

import json
from pathlib import Path

from infra.process import ManagedProcess, module_argv
from infra.settings import Settings, redis_client
from infra.supervise import supervise_argv
from training.dpo_stream import GROUP, status_key
from training.run_dpo_stream import dpo_stream_run

NAME = "dpo-stream"


def dpo_argv(catalog: Path, registry: Path, model: str, cache: Path, options: dict | None = None) -> list[str]:
    """The command line of one job process (`training.run_dpo_stream`); `options` set its fields
    by name (`dpo_stream_run`, e.g. {"micro_batch": 16, "max_wait_s": 10})."""
    return module_argv("training.run_dpo_stream", dpo_stream_run(catalog, registry, model, cache, options))


def dpo_process(settings: Settings, catalog: Path | None = None, registry: Path | None = None, model: str = "",
                cache: Path | None = None, options: dict | None = None, group: str = GROUP) -> ManagedProcess:
    argv = supervise_argv(dpo_argv(catalog, registry, model, cache, options)) if catalog is not None else []

    def healthy() -> bool:
        raw = redis_client(settings.redis, socket_timeout=2).get(status_key(group))
        row = json.loads(raw) if raw is not None else {}
        return row.get("supervisor_pid") == proc.pid() and row.get("state") == "running"

    proc = ManagedProcess(name=NAME, state_dir=settings.resolved_state_dir(), host="-", port=None, argv=argv,
                          healthy=healthy, env=settings.to_env())
    return proc


def start_dpo_job(settings: Settings, catalog: Path, registry: Path, model: str, cache: Path,
                  options: dict | None = None, timeout: float = 300.0) -> dict:
    """Start the job (or adopt the running one) and return its status once it is consuming."""
    proc = dpo_process(settings, catalog, registry, model, cache, options)
    proc.start(timeout)
    return proc.status()


def stop_dpo_job(settings: Settings) -> list[str]:
    """Stop the job started this way (TERM: what it read but did not publish is read again next time)."""
    return [NAME] if dpo_process(settings).stop(timeout=60) else []
