"""`onevision sim traffic` and `onevision ab report`: simulated shoppers against the running
service, and the experiment's per-variant report from the event stream."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import CATALOG

sim = typer.Typer(help="Simulated shoppers searching the running service.", no_args_is_help=True)
ab = typer.Typer(help="A/B experiment reports from the event stream.", no_args_is_help=True)


@sim.command("traffic")
@user_errors
def traffic(
    catalog: Path = CATALOG,
    url: str = typer.Option("http://127.0.0.1:8000", help="the search service (serve run serving/config.yaml)"),
    rate: float = typer.Option(5.0, help="searches per second"),
    duration: float = typer.Option(60.0, help="seconds"),
    concurrency: int = typer.Option(8, help="searches in flight at most"),
    seed: int = typer.Option(0),
    drift: str | None = typer.Option(None, "--drift", help="a drift scenario the world was built with (onevision "
                                                            "world build --drift): trend, price-shock, launches"),
    registry: Path = typer.Option(Path("data/registry"), help="the served models' registry (a drift that changes "
                                                              "the catalog encodes its photos with their tokenizer)"),
) -> None:
    """World shoppers send test-split photos to the service and click and order through the
    world's behaviour model; their events go to Kafka (features update, personalization is live)."""
    from rich.progress import Progress

    from infra.settings import load_settings
    from onevision.catalog.format import load_catalog
    from onevision.world.drift import load_drift
    from serving.access import local_api_key
    from serving.simulator import ShopperWorld, load_shoppers, publish_drift, run_traffic
    from streaming.producer import EventProducer

    schedule = load_drift(catalog, drift) if drift else None
    world = load_shoppers(load_catalog(catalog), schedule)
    settings = load_settings()
    producer = EventProducer(settings)
    world.start()
    if schedule is not None and isinstance(world, ShopperWorld):
        publish_drift(settings, catalog, world, registry)
    with Progress(transient=True) as bar:
        task = bar.add_task("searches", total=max(1, int(rate * duration)))
        stats = run_traffic(url, world, producer, rate, duration, seed, concurrency, progress=lambda: bar.advance(task),
                            api_key=local_api_key(settings))
    producer.close()
    typer.echo(f"{stats.requests} searches ({stats.errors} failed), {stats.clicks} clicks, {stats.orders} orders")
    for variant, v in sorted(stats.by_variant.items()):
        typer.echo(f"  {variant or '(failed)':<16} {v['requests']:>6} searches {v['clicks']:>6} clicks "
                   f"{v['orders']:>5} orders")
    if stats.errors:
        raise typer.Exit(1)


@ab.command("report")
@user_errors
def report(
    control: str = typer.Option("mca", help="the control variant"),
    experiment: str = typer.Option(None, help="only this experiment's events (default: the config's only "
                                   "experiment, else every event with a variant)"),
    reports: Path = typer.Option(Path("reports"), help="where ab.json, ab.md and ab.png go"),
    experiments: Path = typer.Option(None, help="the experiment config whose randomization unit and weights the "
                                     "intervals and the sample-ratio check follow (default serving/experiments.yaml)"),
) -> None:
    """Item CTR, PV CTR, CVR and orders per thousand requests per variant, with 95% intervals
    over the randomization unit, p-values against the control, a ranking only where differences are
    significant (else the requests a difference would need), and a sample-ratio check."""
    from infra.settings import load_settings
    from serving.ab_report import ab_report, experiment_design, markdown
    from serving.experiments import DEFAULT_EXPERIMENTS, ExperimentConfig

    experiment, unit, weights = experiment_design(ExperimentConfig.load(experiments or DEFAULT_EXPERIMENTS), experiment)
    path, rep = ab_report(load_settings(), reports, control, experiment, unit=unit, weights=weights)
    typer.echo(markdown(rep))
    typer.echo(f"wrote {path} (and .md, .png)")
