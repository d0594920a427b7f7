"""What the benchmarks share: their common options, the world and models they read, embedded
services of their own, and how reports and figures are saved.

Every script takes `--smoke` (the same code path at tiny sizes, in seconds, or a minute or two
where it starts a broker, Redis or Ray Serve: each script names the sizes it shrinks), `--out`
(alias `--reports`: the folder its JSON goes to) and `--data` (the root the default world,
registry, feature cache and scratch folders live under). Under `--smoke` the default world is
`<data>/worlds/tiny`, built with its VRQ tokenizer and generator where missing, as
`onevision quickstart --preset tiny` trains them. (The scripts run as `python bench/<name>.py`,
which puts this folder first on the path.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def options(doc: str, data: bool = True, work: str | None = None) -> argparse.ArgumentParser:
    """A parser with the common options: --smoke, --out/--reports; with `data`, --data, --catalog,
    --registry and --cache; with `work`, --data and --work (default <data>/bench/<work>)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="the same code path at tiny sizes, in seconds (on the tiny world, built where missing)")
    ap.add_argument("--out", "--reports", dest="out", type=Path, default=Path("reports"),
                    help="folder the report goes to")
    if data or work:
        ap.add_argument("--data", type=Path, default=Path("data"),
                        help="root of the default world, registry, feature cache and scratch folders")
    if data:
        ap.add_argument("--catalog", type=Path, default=None,
                        help="world (default <data>/worlds/small; with --smoke <data>/worlds/tiny)")
        ap.add_argument("--registry", type=Path, default=None, help="model registry (default <data>/registry)")
        ap.add_argument("--cache", type=Path, default=None, help="feature cache (default <data>/cache/features)")
    if work:
        ap.add_argument("--work", type=Path, default=None, help=f"scratch folder (default <data>/bench/{work})")
        ap.set_defaults(work_name=work)
    return ap


def parse(ap: argparse.ArgumentParser, smoke: dict | None = None) -> argparse.Namespace:
    """The arguments: under --smoke `smoke` replaces the defaults (options given still win), and
    the data paths left out are filled in from --data."""
    if smoke and ap.parse_known_args()[0].smoke:
        ap.set_defaults(**smoke)
    args = ap.parse_args()
    if hasattr(args, "catalog"):
        args.catalog = args.catalog or args.data / "worlds" / ("tiny" if args.smoke else "small")
        args.registry = args.registry or args.data / "registry"
        args.cache = args.cache or args.data / "cache" / "features"
    if hasattr(args, "work_name"):
        args.work = args.work or args.data / "bench" / args.work_name
    return args


def ensure_models(args: argparse.Namespace, mca: bool = False) -> None:
    """Under --smoke: the tiny world at --catalog where nothing is, and its VRQ tokenizer and
    generator (and with `mca` the MCA cascade serving's default experiment also runs) where the
    registry has none for it; nothing is touched that is there."""
    if not args.smoke:
        return
    from onevision.catalog.format import load_catalog
    from onevision.registry import current_version
    from onevision.world.build import build_world
    from onevision.world.config import preset
    from serving.models import default_model
    from training.generator import GeneratorRecipe, generator_name
    from training.offline_models import ensure_generator, ensure_mca, ensure_tokenizer

    if not args.catalog.exists():
        print(f"smoke: building the tiny world in {args.catalog}", flush=True)
        build_world(preset("tiny"), args.catalog, progress=False)
    missing = [m for m in (default_model(args.catalog), default_model(args.catalog, "mca"))[:1 + mca]
               if current_version(args.registry, m) is None]
    if not missing:
        return
    print(f"smoke: training {', '.join(missing)} (tiny) into {args.registry}", flush=True)
    catalog = load_catalog(args.catalog)
    tok = ensure_tokenizer(catalog, "vrq", args.registry, args.cache, "tiny", progress=False)
    if default_model(args.catalog) in missing:
        ensure_generator(catalog, tok, args.registry, args.cache, args.data / "runs",
                         GeneratorRecipe("tiny", name=generator_name(tok)), progress=False)
    if default_model(args.catalog, "mca") in missing:
        ensure_mca(catalog, tok, args.registry, args.cache, progress=False)


def served_generator(args: argparse.Namespace, progress: bool = True):
    """(catalog, trained run behind the served generator, its GeneratorData, the model), after
    `ensure_models`."""
    from onevision.catalog.format import load_catalog
    from onevision.generator.data import data_for_version
    from onevision.generator.model import OneVisionGenerator
    from onevision.registry import resolve, trained_run
    from serving.models import default_model
    from training.point_in_time import point_in_time

    ensure_models(args)
    catalog = point_in_time(load_catalog(args.catalog), args.cache)
    version = trained_run(resolve(args.registry / default_model(args.catalog)))
    data = data_for_version(catalog, version, args.cache, progress=progress)
    return catalog, version, data, OneVisionGenerator.load(version)


@contextmanager
def embedded_services(state: Path | None = None, partitions: int | None = None, configured: bool = False) -> Iterator:
    """A broker and Redis of their own on free loopback ports, tied to this process and stopped
    on exit; their state in `state` (emptied first), else in a temporary folder removed after.
    With `configured`, the ones the settings name instead (`onevision infra up`), started here,
    tied to this process, where they do not answer."""
    from infra import services as svc
    from infra.process import free_port
    from infra.settings import KafkaSettings, RedisSettings, Settings, load_settings

    if configured:
        settings = load_settings()
        if not all(s["healthy"] for s in svc.status(settings)):
            svc.up(settings, tie_to_parent=True)
        yield settings
        return
    scratch = state is None
    state = Path(tempfile.mkdtemp(prefix="onevision-bench-")) if scratch else state
    if not scratch:
        shutil.rmtree(state, ignore_errors=True)
    kafka = {"bootstrap_servers": f"127.0.0.1:{free_port()}", **({"partitions": partitions} if partitions else {})}
    settings = Settings(state_dir=state, kafka=KafkaSettings(**kafka),
                        redis=RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    svc.up(settings, tie_to_parent=True)
    try:
        yield settings
    finally:
        svc.down(settings)
        if scratch:
            shutil.rmtree(state, ignore_errors=True)


def timed(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each function, runs interleaved in rotating order (A B C,
    B C A, ...) so that a noisy neighbour slows every variant alike and none always follows the
    heaviest; plus each one's output."""
    out = {name: fn() for name, fn in fns.items()}  # warm-up
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):  # rotate the order, so no variant always runs right after the heaviest one
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), out[name]) for name, t in times.items()}


def write_report(args: argparse.Namespace, name: str, report: dict) -> Path:
    """`report` as `<--out>/<name>` (JSON)."""
    path = args.out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
