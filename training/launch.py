"""The near-streaming DPO job as a managed background process (pid file and log under the state
dir), for the quickstart and the closed-loop benchmark; `onevision infra down` stops it too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import redis

from infra.process import ManagedProcess
from infra.settings import Settings
from training.dpo_stream import GROUP, status_key

NAME = "dpo-stream"


def dpo_argv(catalog: Path, registry: Path, model: str, cache: Path, options: dict | None = None) -> list[str]:
    """The command line of one `onevision train dpo-stream` process; `options` are its flags
    (e.g. {"micro-batch": 16, "max-wait": 10})."""
    argv = [sys.executable, "-m", "onevision_cli.main", "train", "dpo-stream", "--catalog", str(Path(catalog).resolve()),
            "--registry", str(Path(registry).resolve()), "--model", model, "--cache", str(Path(cache).resolve())]
    for key, value in (options or {}).items():
        argv += [f"--{key}", str(value)]
    return argv


def dpo_process(settings: Settings, catalog: Path | None = None, registry: Path | None = None, model: str = "",
                cache: Path | None = None, options: dict | None = None, group: str = GROUP) -> ManagedProcess:
    argv = dpo_argv(catalog, registry, model, cache, options) if catalog is not None else []

    def healthy() -> bool:
        raw = redis.Redis.from_url(settings.redis.url, socket_timeout=2).get(status_key(group))
        return raw is not None and json.loads(raw).get("pid") == proc.pid()

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
