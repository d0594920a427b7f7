"""`onevision serve start | stop`: the Ray Serve application as a background process."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import CATALOG, REGISTRY

app = typer.Typer(help="The search service (Ray Serve) in the background.", no_args_is_help=True)


@app.command("start")
@user_errors
def start(catalog: Path = CATALOG, registry: Path = REGISTRY,
          port: int = typer.Option(8000, help="HTTP port of the service and its web page")) -> None:
    """Start the service on a local Ray (needs `onevision infra up`, a generator and `onevision train mca`)."""
    from infra.settings import load_settings
    from serving.launch import start_service

    row = start_service(load_settings(), catalog, registry, port)
    typer.echo(f"serving: {row['url']} (pid {row['pid']}, log {row['log']}); stop: onevision serve stop")


@app.command("stop")
@user_errors
def stop() -> None:
    """Stop the background service."""
    from infra.settings import load_settings
    from serving.launch import stop_service

    typer.echo("stopped: serving" if stop_service(load_settings()) else "the service was not running")
