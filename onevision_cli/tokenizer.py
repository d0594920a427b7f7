"""`onevision tokenizer train | report | encode`: semantic IDs for a catalog."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import CACHE, REGISTRY

app = typer.Typer(help="Semantic-ID tokenizers: VRQ and the baselines (RQ-KMeans, RQ-OPQ, OPQ, RQ-VAE).",
                  no_args_is_help=True)



def _sizes(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ValueError(f"--sizes takes comma-separated integers, got {text!r}") from None


@app.command("train")
@user_errors
def train(
    catalog: Path = typer.Option(..., help="catalog directory"),
    method: str = typer.Option("vrq", help="vrq | rq-kmeans | rq-opq | opq | rqvae"),
    sizes: str = typer.Option(None, help="codebook sizes, e.g. 64,32,16,16,16 (default: sized to the catalog; "
                                         "paper: 2048,512,256,256,256)"),
    seed: int = typer.Option(0),
    preset: str = typer.Option("small", help="training lengths: tiny (tests) | small | paper (paper sizes)"),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    without: str = typer.Option(None, help="ablation: train without 'business' or 'category' features (Table 2)"),
) -> None:
    """Train a tokenizer (aligning the encoder first if needed); publish weights and item SIDs."""
    from onevision.catalog.format import load_catalog
    from onevision.eval.tokenizer_report import markdown
    from training.tokenizer import train_tokenizer

    version, metrics = train_tokenizer(load_catalog(catalog), method, registry, cache, _sizes(sizes), seed, preset,
                                       without=without)
    typer.echo(markdown({method: metrics}))
    typer.echo(f"\n{method} tokenizer -> {version} (item_sids.parquet inside), fit {metrics['fit_seconds']:.0f}s, "
               f"total {metrics['total_seconds']:.0f}s")


@app.command("report")
@user_errors
def report(
    catalog: Path = typer.Option(..., help="catalog directory"),
    methods: str = typer.Option("vrq,rq-kmeans,rq-opq,opq,rqvae", help="comma-separated methods"),
    retrain: bool = typer.Option(False, help="train every method even if the registry has one"),
    preset: str = typer.Option("small", help="training lengths: tiny (tests) | small | paper (paper sizes)"),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    reports: Path = typer.Option(Path("reports"), help="where the report goes"),
) -> None:
    """Train or load every method and write reports/tokenizer_<catalog>.json, .md and .png."""
    from onevision.catalog.format import catalog_fingerprint, load_catalog
    from onevision.eval.tokenizer_report import write_tokenizer_report
    from onevision.registry import current_for_catalog, load_version
    from training.tokenizer import train_tokenizer

    c = load_catalog(catalog)
    results = {}
    for method in [m.strip() for m in methods.split(",") if m.strip()]:
        model = f"tokenizer-{method}-{c.name}"
        version = current_for_catalog(registry, model, catalog_fingerprint(c))
        if version is not None and not retrain:
            manifest, _ = load_version(version)
            results[method] = manifest["metrics"]
            typer.echo(f"{method}: loaded {model}/{manifest['version']}")
        else:
            _, results[method] = train_tokenizer(c, method, registry, cache, preset=preset)
    path, table = write_tokenizer_report(c.name, results, reports)
    typer.echo(table)
    typer.echo(f"\nwrote {path} (and .md, .png)")


@app.command("encode")
@user_errors
def encode(
    tokenizer: Path = typer.Option(..., help="a tokenizer's registry version (or model dir)"),
    catalog: Path = typer.Option(..., help="catalog whose items to encode (e.g. new items)"),
    out: Path = typer.Option(..., help="parquet file to write (item_id, sid)"),
    cache: Path = CACHE,
) -> None:
    """Give SIDs to a catalog's items with a trained tokenizer, without retraining (business features
    as known at the catalog's training cutoff, as the tokenizer was trained)."""
    from onevision.catalog.format import load_catalog
    from onevision.tokenizers.encode_items import encode_catalog_items
    from training.point_in_time import point_in_time

    n = encode_catalog_items(tokenizer, point_in_time(load_catalog(catalog), cache), out)
    typer.echo(f"encoded {n} items -> {out}")
