"""`onevision features apply | get`: the Feast feature repo and its online store."""

from __future__ import annotations

import json

import typer

from onevision_cli.errors import user_errors

app = typer.Typer(help="The Feast feature repo (features/repo) and its online store.", no_args_is_help=True)


@app.command("apply")
@user_errors
def apply(backend: str = typer.Option("auto", help="redis, sqlite, or auto (redis when it answers)")) -> None:
    """Register the repo's entities, feature views and push sources (what `feast apply` does)."""
    from features.client import feature_store
    from infra.settings import load_settings

    store = feature_store(load_settings(), backend)
    typer.echo(f"applied to {store.config.online_store.type} online store: "
               + ", ".join(fv.name for fv in store.list_feature_views()))


@app.command("get")
@user_errors
def get(user: list[str] = typer.Option([], help="user ids"), item: list[str] = typer.Option([], help="item ids"),
        backend: str = typer.Option("auto")) -> None:
    """Read users' and items' online features, as serving does."""
    from features.client import feature_store, item_features, user_features
    from infra.settings import load_settings

    store = feature_store(load_settings(), backend, apply=False)
    out = (user_features(store, user) if user else []) + (item_features(store, item) if item else [])
    typer.echo(json.dumps(out, indent=2, default=str))
