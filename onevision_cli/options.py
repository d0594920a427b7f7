"""Options several commands share, declared once so their defaults and help agree."""

from __future__ import annotations

from pathlib import Path

import typer

CATALOG = typer.Option(..., help="catalog directory")
REGISTRY = typer.Option(Path("data/registry"), help="model registry root")
CACHE = typer.Option(Path("data/cache/features"), help="feature and visual-token cache root")
RUNS = typer.Option(Path("data/runs"), help="stage checkpoints (an interrupted run resumes from them)")
REPORTS = typer.Option(Path("reports"), help="where the JSON and Markdown reports go")
WORKERS = typer.Option(1, min=1, help="data-parallel Ray Train workers (1: this process, no Ray)")
ADDRESS = typer.Option(None, help="an existing Ray cluster for the workers (default: a local Ray for this run)")
DEVICE = typer.Option("cpu", help="auto | cpu | cuda[:N]: where the models train and run")
PRECISION = typer.Option("auto", help="auto | fp32 | bf16 | fp16: mixed precision on a GPU (the CPU stays fp32)")
