"""`onevision eval ann`: the ANN baseline and its HR/MRR report."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import CACHE, CATALOG, REGISTRY, REPORTS, RUNS

app = typer.Typer(help="Offline evaluation.", no_args_is_help=True)


@app.command("ann")
@user_errors
def ann(
    catalog: Path = typer.Option(..., help="catalog directory"),
    encoder: str = typer.Option("efficientnet", help="pixels | efficientnet"),
    split: str = typer.Option("test", help="query split to evaluate: train | val | test | all"),
    reports: Path = typer.Option(Path("reports"), help="where the JSON and Markdown reports go"),
) -> None:
    """Embed catalog and query images, search with faiss, report HR@1/4/10 and MRR@4/10."""
    from onevision.catalog.format import load_catalog
    from onevision.encoders import get_encoder
    from onevision.eval.ann import evaluate_ann, write_report

    c = load_catalog(catalog)
    result = evaluate_ann(c, get_encoder(encoder), split=split)
    path, table = write_report(c, result, reports)
    typer.echo(table)
    typer.echo(f"\nwrote {path}")


@app.command("offline")
@user_errors
def offline(
    catalog: Path = CATALOG,
    preset: str = typer.Option("small", help="training preset for anything not yet in the registry"),
    ablations: bool = typer.Option(True, help="also train and score the Table 2 ablations"),
    beam: int = typer.Option(10, help="beam size (the paper uses 10 offline)"),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    runs: Path = RUNS,
    reports: Path = REPORTS,
) -> None:
    """ANN, MCA, MCA w/o ranking, RQ-KMeans GR and OneVision (w/ and w/o personalization) on the
    test split's CLICK and ORDER sets, plus the ablations: Tables 1 and 2."""
    from onevision.catalog.format import load_catalog
    from onevision.eval.offline import offline_report
    from training.offline_models import offline_models

    c = load_catalog(catalog)
    models = offline_models(c, registry, cache, runs, preset, ablations)
    path, report = offline_report(c, models, cache, reports, beam, log=typer.echo)
    typer.echo("\n" + path.with_suffix(".md").read_text())
    typer.echo(f"wrote {path} and {path.with_suffix('.md')}")
