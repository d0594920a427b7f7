"""Options several commands share, declared once so their defaults and help agree."""

from __future__ import annotations

from pathlib import Path

import typer

CATALOG = typer.Option(..., help="catalog directory")
REGISTRY = typer.Option(Path("data/registry"), help="model registry root")
CACHE = typer.Option(Path("data/cache/features"), help="feature and visual-token cache root")
RUNS = typer.Option(Path("data/runs"), help="stage checkpoints (an interrupted run resumes from them)")
REPORTS = typer.Option(Path("reports"), help="where the JSON and Markdown reports go")
