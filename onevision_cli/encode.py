"""`onevision encode`: every catalog image through V with Ray Data, into the caches later stages read."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import CACHE, CATALOG, REGISTRY


@user_errors
def encode(
    catalog: Path = CATALOG,
    workers: int = typer.Option(2, help="Ray actors encoding in parallel (each loads V once)"),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    address: str = typer.Option(None, help="Ray cluster address (default: a local Ray of --workers CPUs, "
                                           "stopped after); its nodes must read the catalog and the cache"),
    chunk: int = typer.Option(512, help="images per Parquet shard (a rerun skips finished shards)"),
    cpus_per_worker: float = typer.Option(1.0, help="CPUs (and torch threads) per actor"),
    preset: str = typer.Option("small", help="alignment length when the catalog has no encoder yet: tiny | small"),
    features: bool = typer.Option(True, help="also write the tokenizer's catalog features from the embeddings"),
) -> None:
    """Encode the catalog's images, item views and query photos with the aligned encoder V (aligning
    one first if the catalog has none) on a Ray Data actor pool: Parquet shards, then the visual-token
    and feature caches, so training reads them without encoding again."""
    from onevision.catalog.format import load_catalog
    from training.encode_batch import encode_catalog
    from training.tokenizer import ensure_encoder, recipe

    c = load_catalog(catalog)
    version, _ = ensure_encoder(c, registry, recipe(preset).align)
    run = encode_catalog(c, version, cache, workers=workers, chunk=chunk, address=address,
                         cpus_per_worker=cpus_per_worker, features=features)
    done = run.n_shards - len(run.encoded_shards)
    typer.echo(f"encoded {run.encoded_images} of {run.n_images} images with {version} "
               f"({len(run.encoded_shards)} shards encoded, {done} already there)")
    if run.encoded_images:
        typer.echo(f"{run.items_per_second:.1f} items/s with {workers} workers ({run.seconds:.1f} s, "
                   f"Ray start {run.ray_start_seconds:.1f} s)")
    typer.echo(f"shards and manifest: {run.out}")
    typer.echo(f"visual tokens: {run.visual_cache}")
    if run.features is not None:
        typer.echo(f"tokenizer features: {run.features}")
