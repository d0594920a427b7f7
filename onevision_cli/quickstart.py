"""`onevision quickstart`: the main job on embedded defaults (`pipelines.quickstart`)."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from pipelines.quickstart import QuickstartConfig
from pipelines.quickstart import quickstart as run

D = QuickstartConfig()


@user_errors
def quickstart(
    preset: str = typer.Option(D.preset, help="world preset (tiny is for a fast smoke run); with --catalog the "
                                              "training preset, tiny, quick or small"),
    seed: int = typer.Option(D.seed, help="world seed"),
    reports: Path = typer.Option(D.reports, help="where reports go"),
    registry: Path = typer.Option(D.registry, help="model registry root"),
    services: bool = typer.Option(D.services, help="start the embedded broker and Redis, the workers and the search "
                                                   "service"),
    port: int = typer.Option(D.port, help="HTTP port of the search service and its web page"),
    sim_duration: float = typer.Option(D.sim_duration, help="seconds of simulated shoppers against the service"),
    sim_rate: float = typer.Option(D.sim_rate, help="simulated searches per second"),
    catalog: Path | None = typer.Option(D.catalog, help="run on this catalog (e.g. an import) instead of building the "
                                                 "synthetic world"),
    training: str | None = typer.Option(D.training, help="training lengths: tiny | quick | small (default: tiny for "
                                                          "the tiny world, else small; quick is a faster first run)"),
) -> None:
    """Build a world, score the ANN baselines, align V and train VRQ, train the generator and show searches,
    start the services and stream features, print where everything is (on --catalog: no world is built)."""
    run(QuickstartConfig(preset, seed, reports, registry, services, port, sim_duration, sim_rate, catalog, training))
