"""`onevision world build`: generate a synthetic product world as a catalog directory."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors

app = typer.Typer(help="Synthetic e-commerce worlds (catalog, shoppers, history, shopper photos).",
                  no_args_is_help=True)

@app.command("build")
@user_errors
def build(
    preset: str = typer.Option("small", help="tiny (tests), small (quickstart, ~5k items), large (100k items)"),
    out: Path = typer.Option(None, help="catalog directory to write (default data/worlds/<preset>)"),
    seed: int = typer.Option(0, help="world seed; the same seed gives byte-identical files"),
    workers: int = typer.Option(0, help="render processes (0 = one per CPU)"),
    force: bool = typer.Option(False, help="rebuild even if a world with this config is already there"),
) -> None:
    """Build a world; skips the work when the same config was already built there."""
    from onevision.world.build import build_world, world_dir
    from onevision.world.config import preset as get_preset

    cfg = get_preset(preset, seed=seed, workers=workers)
    out = out or world_dir(preset, seed)
    s = build_world(cfg, out, force=force)
    if s.skipped:
        typer.echo(f"world {preset} (seed {seed}) already built at {out}; --force rebuilds it")
        return
    typer.echo(
        f"world {preset} (seed {seed}) -> {out}\n"
        f"  {s.n_items} items in {s.n_families} families, {s.n_users} users, {s.n_events} events, "
        f"{s.n_queries} queries, {s.n_images} images\n"
        f"  {s.seconds:.1f}s, {s.items_per_second:.0f} items/s"
    )
