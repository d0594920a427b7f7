"""`onevision encoder align`: fine-tune the image encoder on multi-view pairs, then evaluate it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import ADDRESS, DEVICE, REGISTRY, REPORTS, RUNS, WORKERS

app = typer.Typer(help="The image encoder V: multi-view alignment (OneVision eq. 1).", no_args_is_help=True)


@app.command("align")
@user_errors
def align(
    catalog: Path = typer.Option(..., help="catalog directory"),
    steps: int = typer.Option(300, help="training steps"),
    batch_size: int = typer.Option(96, help="positive pairs per step"),
    seed: int = typer.Option(0, help="training seed"),
    registry: Path = REGISTRY,
    runs: Path = RUNS,
    reports: Path = REPORTS,
    evaluate: bool = typer.Option(True, help="run the ANN evaluation with the new encoder"),
    workers: int = WORKERS,
    address: str = ADDRESS,
    device: str = DEVICE,
) -> None:
    """Align V on the catalog's views and train photos; publish it; report ANN HR/MRR. With
    --workers N (or --address) on N Ray Train workers: each encodes its share of the images and
    runs the head on its share of every batch, the loss sees the whole batch."""
    from onevision.catalog.format import catalog_fingerprint, load_catalog
    from onevision.encoders.aligned import AlignedImageEncoder
    from onevision.eval.ann import evaluate_ann, write_report
    from training.align_encoder import AlignRecipe, align_on_ray, publish_encoder, train_aligned_encoder
    from training.configs import ParallelConfig
    from training.runtime import Runtime, use_runtime

    c = load_catalog(catalog)
    recipe = AlignRecipe(steps=steps, batch_size=batch_size, seed=seed)
    parallel = ParallelConfig(workers, address, device)
    if parallel.distributed:
        workdir = runs / f"encoder-{c.name}" / f"{catalog_fingerprint(c)[:12]}-{steps}-{batch_size}-{seed}"
        model, log = align_on_ray(c, recipe, parallel, workdir)
    else:
        with use_runtime(Runtime(device)):
            model, log = train_aligned_encoder(c, recipe)
    model = model.cpu()
    with tempfile.TemporaryDirectory() as work:
        version = publish_encoder(model, recipe, c, log, registry, Path(work))
    by = f", {workers} Ray Train workers" if parallel.distributed else ""
    typer.echo(f"aligned encoder -> {version} ({log['seconds']:.0f}s{by}, final loss "
               f"{sum(log['losses'][-20:]) / 20:.3f})")
    if evaluate:
        path, table = write_report(c, evaluate_ann(c, AlignedImageEncoder(model)), reports)
        typer.echo(table)
        typer.echo(f"\nwrote {path}")
