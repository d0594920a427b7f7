"""Root of the `onevision` command: registers every command group."""

from __future__ import annotations

import typer

from onevision_cli import (catalog, encoder, eval, experiment, features, infra, registry, serve, stream, tokenizer,
                           train, world)
from onevision_cli.quickstart import quickstart

app = typer.Typer(
    name="onevision",
    help="OneVision: generative image search for e-commerce with live personalization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("quickstart")(quickstart)
app.add_typer(world.app, name="world")
app.add_typer(catalog.app, name="catalog")
app.add_typer(encoder.app, name="encoder")
app.add_typer(tokenizer.app, name="tokenizer")
app.add_typer(train.app, name="train")
app.add_typer(eval.app, name="eval")
app.add_typer(infra.app, name="infra")
app.add_typer(stream.app, name="stream")
app.add_typer(features.app, name="features")
app.add_typer(serve.app, name="serve")
app.add_typer(registry.app, name="registry")
app.add_typer(experiment.sim, name="sim")
app.add_typer(experiment.ab, name="ab")

if __name__ == "__main__":
    app()
