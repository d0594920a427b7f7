"""Root of the `onevision` command: registers every command group."""

from __future__ import annotations

import typer

from onevision_cli import (
    catalog,
    encoder,
    eval,
    experiment,
    features,
    infra,
    registry,
    serve,
    stream,
    tokenizer,
    train,
    world,
)
from onevision_cli.encode import encode
from onevision_cli.quickstart import quickstart

app = typer.Typer(
    name="onevision",
    help="OneVision: generative image search for e-commerce with live personalization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("quickstart")(quickstart)
app.command("encode")(encode)
for group in (world, catalog, encoder, tokenizer, train, eval, infra, stream, features, serve, registry):
    app.add_typer(group.app, name=group.__name__.rsplit(".", 1)[-1])
app.add_typer(experiment.sim, name="sim")
app.add_typer(experiment.ab, name="ab")

if __name__ == "__main__":
    app()
