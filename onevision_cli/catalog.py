"""`onevision catalog validate | import`: check a catalog, or convert a real data set into one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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


@app.command("publish")
@user_errors
def publish(
    old: Path = typer.Argument(..., help="the catalog served now (the one the model was trained on, or the last "
                                         "one published)"),
    new: Path = typer.Argument(..., help="the catalog as it should be"),
    registry: Path = typer.Option(Path("data/registry"), "--registry", help="model registry"),
    model: str | None = typer.Option(None, "--model", help="the served generator whose tokenizer encodes new photos "
                                                           "(default generator-vrq-<OLD's name>)"),
) -> None:
    """Publish the changes from OLD to NEW (items added, updated, removed) to the running service:
    replicas and workers apply them within seconds, without a restart."""
    from infra.settings import load_settings
    from streaming.catalog_stream import publish_diff

    counts = publish_diff(load_settings(), old, new, registry, model)
    typer.echo(f"published {counts['add']} additions, {counts['update']} updates and {counts['remove']} removals "
               "to the catalog topic")


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


@import_app.command("table")
@user_errors
def import_table(
    items: Path = typer.Argument(..., help="items table, CSV or Parquet: item_id, image, category, title "
                                           "[, price, views]"),
    out: Path = typer.Argument(..., help="catalog directory to write"),
    events: Path | None = typer.Option(None, "--events", help="event log: user_id, item_id, type (click|order), "
                                                              "timestamp [, price]"),
    queries: Path | None = typer.Option(None, "--queries", help="query photos: image, item_id [, user_id, kind, "
                                                                "timestamp, split, target_item_ids]"),
    images_dir: Path | None = typer.Option(None, "--images-dir", help="base of relative image paths "
                                                                      "(default: each table's folder)"),
    split: Literal["time", "given", "hash"] = typer.Option(
        "time", "--split", help="time: the latest queries are test, the ones before val; given: the queries "
                                "table's split column; hash: by query id"),
    val_share: float = typer.Option(0.1, "--val-share", help="share of queries for val"),
    test_share: float = typer.Option(0.2, "--test-share", help="share of queries for test (the latest, by time)"),
    seed: int = typer.Option(0, "--seed", help="seed of the hash split"),
) -> None:
    """Your own data: items, an optional event log and query photos (README "Bring your own data")."""
    from onevision.importers.table import TableImport
    from onevision.importers.table import import_table as run

    result = run(TableImport(items=items, out=out, events=events, queries=queries, images_dir=images_dir,
                             split=split, val_share=val_share, test_share=test_share, seed=seed))
    for line in result.summary_lines():
        typer.echo(line)
