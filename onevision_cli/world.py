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
    drift: list[str] = typer.Option([], "--drift", help="also schedule a drift after the training cutoff for the "
                                                        "simulator: trend, price-shock or launches (repeatable); the "
                                                        "world's own files stay as without it"),
) -> None:
    """Build a world; skips the work when the same config was already built there."""
    from onevision.world.build import build_world, world_dir
    from onevision.world.config import preset as get_preset

    cfg = get_preset(preset, seed=seed, workers=workers)
    out = out or world_dir(preset, seed)
    s = build_world(cfg, out, force=force)
    for scenario in drift:
        from onevision.world.drift import build_drift, drift_path

        d = build_drift(out, scenario)
        typer.echo(f"drift {scenario} -> {drift_path(out, scenario)} (starts {d.start_s:.0f} s into simulated "
                   f"traffic; simulate it with --drift {scenario})")
    if s.skipped:
        typer.echo(f"world {preset} (seed {seed}) already built at {out}; --force rebuilds it")
        return
    typer.echo(
        f"world {preset} (seed {seed}) -> {out}\n"
        f"  {s.n_items} items in {s.n_families} families, {s.n_users} users, {s.n_events} events, "
        f"{s.n_queries} queries, {s.n_images} images\n"
        f"  {s.seconds:.1f}s, {s.items_per_second:.0f} items/s"
    )


@app.command("next-version")
@user_errors
def next_version(
    base: Path = typer.Argument(..., help="a world's catalog directory (or an earlier next version)"),
    out: Path = typer.Argument(..., help="catalog directory to write"),
    adds: int = typer.Option(100, "--adds", min=0, help="items launched (new families, with shopper photos)"),
    removes: int = typer.Option(10, "--removes", min=0, help="items removed"),
    price_changes: int = typer.Option(50, "--price-changes", min=0, help="items whose price moves 15-45%"),
    photos: int = typer.Option(2, "--photos", min=0, help="shopper photos of each launched item (test queries)"),
    seed: int = typer.Option(1, "--seed", min=1, help="which next version (different seeds launch other items)"),
) -> None:
    """The catalog's next version: launches, removals and price changes, for `onevision catalog publish BASE OUT`."""
    from onevision.world.next_version import NextVersion
    from onevision.world.next_version import next_version as run

    got = run(base, out, NextVersion(adds, removes, price_changes, photos, seed))
    typer.echo(f"{out}: {len(got['added'])} items launched, {len(got['removed'])} removed, "
               f"{len(got['repriced'])} repriced (publish with: onevision catalog publish {base} {out})")
