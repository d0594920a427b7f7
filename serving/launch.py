"""The service as a managed background process (pid file and log under the state dir), for the
quickstart and `onevision serve start | stop`; `onevision infra down` stops it too."""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from infra.process import ManagedProcess
from infra.settings import Settings

NAME = "serving"


def service_process(settings: Settings, catalog: Path | None = None, registry: Path | None = None,
                    port: int = 8000, host: str = "127.0.0.1", experiments: Path | None = None) -> ManagedProcess:
    argv = [sys.executable, "-m", "serving.run", "--host", host, "--port", str(port)]
    if catalog is not None:
        argv += ["--catalog", str(Path(catalog).resolve()),
                 "--registry", str(Path(registry or "data/registry").resolve())]
    if experiments is not None:
        argv += ["--experiments", str(Path(experiments).resolve())]

    def healthy() -> bool:
        return requests.get(f"http://{host}:{port}/healthz", timeout=5).status_code == 200

    return ManagedProcess(name=NAME, state_dir=settings.resolved_state_dir(), host=host, port=port, argv=argv,
                          healthy=healthy, env=settings.to_env())


def start_service(settings: Settings, catalog: Path, registry: Path, port: int = 8000, timeout: float = 240.0,
                  experiments: Path | None = None) -> dict:
    """Start the service (or adopt the running one) and return its status once /healthz answers."""
    proc = service_process(settings, catalog, registry, port, experiments=experiments)
    proc.start(timeout)
    return {**proc.status(), "url": f"http://{proc.host}:{port}/"}


def stop_service(settings: Settings) -> list[str]:
    """Stop the service started this way (TERM: Serve and Ray shut down first)."""
    proc = service_process(settings)
    return [NAME] if proc.stop(timeout=60) else []
