"""`onevision infra up | down | status`: the embedded broker and Redis for development."""

from __future__ import annotations

import json

import typer

from onevision_cli.errors import user_errors

app = typer.Typer(help="Embedded services: Kafka-compatible broker (Tansu) and Redis.", no_args_is_help=True)


def _print(rows: list[dict]) -> None:
    for r in rows:
        state = "healthy" if r["healthy"] else ("running, unhealthy" if r["running"] else "stopped")
        where = "embedded" if r["embedded"] else "external"
        pid = f"pid {r['pid']}" if r["pid"] else "-"
        typer.echo(f"{r['name']:<6} {r['address']:<22} {state:<20} {where:<9} {pid}")


@app.command("up")
@user_errors
def up(timeout: float = typer.Option(30.0, help="seconds to wait for each service to be healthy")) -> None:
    """Start the broker and Redis (idempotent) and wait until both answer."""
    from infra.services import up as start
    from infra.settings import load_settings

    _print(start(load_settings(), timeout))


@app.command("down")
@user_errors
def down() -> None:
    """Stop the search service, the DPO job and the stream workers, then the embedded services."""
    from infra.services import down as stop
    from infra.settings import load_settings
    from serving.launch import stop_service
    from streaming.launch import stop_workers
    from training.launch import stop_dpo_job

    settings = load_settings()
    stopped = stop_service(settings) + stop_dpo_job(settings) + stop_workers(settings) + stop(settings)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("status")
@user_errors
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Show each service's address, health and pid; exit 1 if any is not healthy."""
    from infra.services import status as get
    from infra.settings import load_settings

    rows = get(load_settings())
    typer.echo(json.dumps(rows, indent=2)) if as_json else _print(rows)
    if not all(r["healthy"] for r in rows):
        raise typer.Exit(1)
