"""What the benchmarks share: the options naming the data they read, and how figures are saved.
(The scripts run as `python bench/<name>.py`, which puts this folder first on the path.)"""

from __future__ import annotations

import argparse
from pathlib import Path


def data_options(ap: argparse.ArgumentParser, cache: bool = True) -> None:
    """--catalog, --registry and (with `cache`) --cache, with the quickstart's locations."""
    ap.add_argument("--catalog", type=Path, default=Path("data/worlds/small"))
    ap.add_argument("--registry", type=Path, default=Path("data/registry"))
    if cache:
        ap.add_argument("--cache", type=Path, default=Path("data/cache/features"))


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
