"""`onevision eval ann`: the ANN baseline and its HR/MRR report."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision.cli.errors import user_errors

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
