"""`onevision quickstart`: the main job on embedded defaults, end to end.

Build the small world, score the ANN baselines, align the image encoder and train the VRQ
tokenizer (with its SID report), start the embedded broker and Redis, and print a summary.
Later capabilities plug in here.
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
    registry: Path = typer.Option(Path("data/registry"), help="model registry root"),
    services: bool = typer.Option(True, help="start the embedded broker and Redis"),
) -> None:
    """Build a world, score the ANN baselines, align V and train VRQ, start the services, print where everything is."""
    from onevision.catalog.format import load_catalog
    from onevision.cli.world import world_dir
    from onevision.encoders import get_encoder
    from onevision.eval.ann import evaluate_ann, write_report
    from onevision.world.build import build_world
    from onevision.world.config import preset as get_preset

    out = world_dir(preset, seed)
    training = "tiny" if preset == "tiny" else "small"  # training lengths follow the world's size
    typer.secho(f"[1/4] world: {preset} (seed {seed}) -> {out}", bold=True)
    s = build_world(get_preset(preset, seed=seed), out)
    typer.echo("  already built, reused" if s.skipped else f"  built in {s.seconds:.0f}s ({s.items_per_second:.0f} items/s)")
    catalog = load_catalog(out)

    typer.secho("[2/4] ANN baselines (faiss over image embeddings, test split)", bold=True)
    for name in ("pixels", "efficientnet"):
        path, table = write_report(catalog, evaluate_ann(catalog, get_encoder(name)), reports)
    typer.echo(table)

    typer.secho("[3/4] image encoder alignment and VRQ tokenizer", bold=True)
    from onevision.eval.tokenizer_report import markdown
    from onevision.registry import current_version, load_version, resolve
    from training.tokenizer import cached_aligned_encoder, train_tokenizer

    cache = Path("data/cache/features")
    model = f"tokenizer-vrq-{catalog.name}"
    if current_version(registry, model):
        tok_version = resolve(model, registry)
        metrics = load_version(tok_version)[0]["metrics"]
        typer.echo(f"  reused {tok_version}")
    else:
        tok_version, metrics = train_tokenizer(catalog, "vrq", registry, cache, preset=training)
    typer.echo(markdown({"vrq": metrics}))
    path, table = write_report(catalog, evaluate_ann(catalog, cached_aligned_encoder(catalog, registry, cache, training)), reports)
    typer.echo(table)

    if services:
        from infra.services import up
        from infra.settings import load_settings

        typer.secho("[4/4] embedded services", bold=True)
        for row in up(load_settings()):
            typer.echo(f"  {row['name']:<6} {row['address']:<22} {'healthy' if row['healthy'] else 'NOT healthy'}")
        typer.echo("  stop them with: onevision infra down")

    typer.secho("\nsummary", bold=True)
    typer.echo(f"  catalog : {catalog.root} ({len(catalog.items)} items, {catalog.items['category'].nunique()} categories, "
               f"{len(catalog.queries)} shopper photos, {len(catalog.events)} events)")
    typer.echo(f"  reports : {path} (and .md)")
    typer.echo(f"  VRQ     : {tok_version} (item_sids.parquet inside)")
