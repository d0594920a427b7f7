"""`onevision encoder align`: fine-tune the image encoder on multi-view pairs, then evaluate it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from onevision_cli.errors import user_errors

app = typer.Typer(help="The image encoder V: multi-view alignment (OneVision eq. 1).", no_args_is_help=True)


@app.command("align")
@user_errors
def align(
    catalog: Path = typer.Option(..., help="catalog directory"),
    steps: int = typer.Option(300, help="training steps"),
    batch_size: int = typer.Option(96, help="positive pairs per step"),
    seed: int = typer.Option(0, help="training seed"),
    registry: Path = typer.Option(Path("data/registry"), help="model registry root"),
    reports: Path = typer.Option(Path("reports"), help="where the ANN report goes"),
    evaluate: bool = typer.Option(True, help="run the ANN evaluation with the new encoder"),
) -> None:
    """Align V on the catalog's views and train photos; publish it; report ANN HR/MRR."""
    from onevision.catalog.format import load_catalog
    from onevision.encoders.aligned import AlignedImageEncoder
    from onevision.eval.ann import evaluate_ann, write_report
    from training.align_encoder import AlignRecipe, publish_encoder, train_aligned_encoder

    c = load_catalog(catalog)
    recipe = AlignRecipe(steps=steps, batch_size=batch_size, seed=seed)
    model, log = train_aligned_encoder(c, recipe)
    with tempfile.TemporaryDirectory() as work:
        version = publish_encoder(model, recipe, c, log, registry, Path(work))
    typer.echo(f"aligned encoder -> {version} ({log['seconds']:.0f}s, final loss {sum(log['losses'][-20:]) / 20:.3f})")
    if evaluate:
        path, table = write_report(c, evaluate_ann(c, AlignedImageEncoder(model)), reports)
        typer.echo(table)
        typer.echo(f"\nwrote {path}")
