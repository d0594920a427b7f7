"""`onevision quickstart`: the main job on embedded defaults, end to end.

At this stage: build the small world, validate it, score the ANN baselines on it, start the
embedded broker and Redis, and print a summary. Later capabilities plug in here.
"""

from __future__ import annotations

from pathlib import Path

import typer

from onevision.cli.errors import user_errors


@user_errors
def quickstart(
    preset: str = typer.Option("small", help="world preset (tiny is for a fast smoke run)"),
    seed: int = typer.Option(0, help="world seed"),
    reports: Path = typer.Option(Path("reports"), help="where reports go"),
    services: bool = typer.Option(True, help="start the embedded broker and Redis"),
) -> None:
    """Build a world, evaluate the ANN baselines, start the services, print where everything is."""
    from onevision.catalog.format import load_catalog
    from onevision.cli.world import world_dir
    from onevision.encoders import get_encoder
    from onevision.eval.ann import evaluate_ann, write_report
    from onevision.world.build import build_world
    from onevision.world.config import preset as get_preset

    out = world_dir(preset, seed)
    typer.secho(f"[1/3] world: {preset} (seed {seed}) -> {out}", bold=True)
    s = build_world(get_preset(preset, seed=seed), out)
    typer.echo("  already built, reused" if s.skipped else f"  built in {s.seconds:.0f}s ({s.items_per_second:.0f} items/s)")
    catalog = load_catalog(out)

    typer.secho("[2/3] ANN baselines (faiss over image embeddings, test split)", bold=True)
    table = ""
    for name in ("pixels", "efficientnet"):
        path, table = write_report(catalog, evaluate_ann(catalog, get_encoder(name)), reports)
    typer.echo(table)

    if services:
        from infra.services import up
        from infra.settings import load_settings

        typer.secho("[3/3] embedded services", bold=True)
        for row in up(load_settings()):
            typer.echo(f"  {row['name']:<6} {row['address']:<22} {'healthy' if row['healthy'] else 'NOT healthy'}")
        typer.echo("  stop them with: onevision infra down")

    typer.secho("\nsummary", bold=True)
    typer.echo(f"  catalog : {catalog.root} ({len(catalog.items)} items, {catalog.items['category'].nunique()} categories, "
               f"{len(catalog.queries)} shopper photos, {len(catalog.events)} events)")
    typer.echo(f"  report  : {path} (and .md)")
