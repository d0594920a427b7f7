"""`onevision catalog validate | import`: check a catalog, or convert a real data set into one."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors

app = typer.Typer(help="Catalog directories: validate them, import real data sets.", no_args_is_help=True)
import_app = typer.Typer(help="Import a real data set into the catalog format.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@app.command("validate")
@user_errors
def validate(catalog: Path = typer.Argument(..., help="catalog directory")) -> None:
    """Check a catalog against the format; print a summary or one line naming the problem."""
    from onevision.catalog.format import load_catalog

    c = load_catalog(catalog)
    kinds = c.queries["kind"].value_counts().to_dict()
    splits = c.queries["split"].value_counts().to_dict()
    typer.echo(f"catalog {c.root}: ok - {len(c.items)} items, {c.items['category'].nunique()} categories, "
               f"{len(c.queries)} queries {kinds} {splits}, {len(c.events)} events")


@import_app.command("grocery")
@user_errors
def import_grocery(
    path: Path = typer.Argument(..., help="the Grocery Store Dataset folder (holds dataset/ or is it)"),
    out: Path = typer.Argument(..., help="catalog directory to write"),
) -> None:
    """Grocery Store Dataset: 81 iconic images as the catalog, the phone photos as queries."""
    from onevision.importers.grocery import import_grocery as run

    c = run(path, out)
    typer.echo(f"imported {len(c.items)} items and {len(c.queries)} queries "
               f"{c.queries['split'].value_counts().to_dict()} into {out}")
