"""`onevision registry list | promote | rollback | push`: what the model registry holds, what serves, and
copies to a registry on shared storage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import REGISTRY

app = typer.Typer(help="Model registry: versions, their gate verdicts, and which one serves.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_versions(model: str = typer.Argument(..., help="registry model, e.g. generator-vrq-small"),
                  registry: Path = REGISTRY,
                  as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every version, oldest first: * marks CURRENT; status, parent, gate scores, sessions trained
    (streaming DPO) or visual tokens kept (pruning distillation)."""
    from onevision.registry import RegistryError, history

    rows = history(registry, model)
    if not rows:
        raise RegistryError(f"{registry / model}: no versions")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        gate = r["metrics"].get("gate") or {}
        scores = "  ".join(f"{k} {v:.2f}" for k, v in gate.items())
        stream = r["stream"] or {}
        trained = f"{stream['examples']} examples / {stream['sessions']} sessions" if stream else ""
        distilled = r["metrics"].get("stages", {}).get("distill")
        if distilled:
            trained = f"distilled, keeps {distilled['keep_schedule'][-1]} visual tokens"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
        typer.echo(f"{'*' if r['current'] else ' '} {r['version']}  {r['status']:<8} parent {r['parent'] or '-':<6} "
                   f"{when}  {scores}  {trained}".rstrip())


@app.command("promote")
@user_errors
def promote_version(model: str = typer.Argument(...), version: str = typer.Argument(..., help="e.g. v0007"),
                    force: bool = typer.Option(False, help="serve it even if its gate rejected it"),
                    registry: Path = REGISTRY) -> None:
    """Make VERSION the one that serves (services following the model hot-swap to it)."""
    from onevision.registry import promote

    typer.echo(f"{model}: CURRENT -> {promote(registry, model, version, force)}")


@app.command("rollback")
@user_errors
def rollback_version(model: str = typer.Argument(...), registry: Path = REGISTRY) -> None:
    """Serve the version the current one came from (its parent, or the newest accepted one before it)."""
    from onevision.registry import current_version, rollback

    before = current_version(registry, model)
    typer.echo(f"{model}: CURRENT {before} -> {rollback(registry, model)}")


@app.command("push")
@user_errors
def push_versions(models: list[str] = typer.Argument(..., help="registry models, e.g. generator-vrq-small"),
                  to: str = typer.Option(..., "--to", help="the shared registry's URL, e.g. s3://bucket/registry"),
                  registry: Path = REGISTRY,
                  force: bool = typer.Option(False, help="move the store's CURRENT even from a version the local "
                                                         "registry does not have")) -> None:
    """Copy models (and the tokenizers and encoders they name) to a registry on shared storage
    that a cluster's replicas follow; the store's CURRENT moves to the local one."""
    from onevision.registry_store import push_models

    for row in push_models(registry, to, models, force):
        typer.echo(f"{row['model']}: uploaded {', '.join(row['uploaded']) or 'nothing'}; "
                   f"CURRENT {row['was'] or '-'} -> {row['current']}")
