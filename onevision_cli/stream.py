"""`onevision stream worker | run | replay | status`: the streaming feature pipeline."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import typer

from onevision_cli.errors import user_errors

app = typer.Typer(help="Kafka -> Feast streaming: feature workers, replays, status.", no_args_is_help=True)

ITEMS_HELP = "item SID table: a tokenizer version folder in the registry or an item_sids.parquet"


@app.command("worker")
@user_errors
def worker(items: Path = typer.Option(..., help=ITEMS_HELP),
           role: str = typer.Option("features", help="features (Feast rows) or sessions (session logs)"),
           group: str = typer.Option("", help="consumer group and Redis namespace (default: onevision-<role>)"),
           long_term: str = typer.Option("mean", help="long-term SID: mean (re-quantized mean) or onesearch (eq. 3)"),
           max_idle: float = typer.Option(None, help="exit after this many seconds without events"),
           session_idle: float = typer.Option(60.0, help="sessions: close one after this many seconds without events"),
           log_level: str = typer.Option("INFO")) -> None:
    """Run one feature worker in the foreground (several share the partitions of a group)."""
    import logging

    from infra.settings import load_settings
    from onevision.items import load_item_table
    from onevision.behaviour.long_term import LongTermConfig
    from streaming.worker import FeatureWorker, WorkerConfig

    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if long_term not in ("mean", "onesearch"):
        raise ValueError(f"--long-term must be mean or onesearch, not {long_term!r}")
    table = load_item_table(items)
    if long_term == "mean" and table.vectors is None:
        logging.warning("%s has no item vectors (tokenizer trained before they were written); "
                        "long-term SIDs use OneSearch eq. 3 instead", items)
        long_term = "onesearch"
    config = WorkerConfig(role=role, group=group, long_term=LongTermConfig(mode=long_term), session_idle_s=session_idle)
    FeatureWorker(load_settings(), table, config).run(max_idle_s=max_idle)


@app.command("run")
@user_errors
def run(items: Path = typer.Option(..., help=ITEMS_HELP),
        workers: int = typer.Option(1, min=1, help="feature worker processes sharing the partitions"),
        session_workers: int = typer.Option(1, min=0, help="sessionizer processes"),
        long_term: str = typer.Option("mean")) -> None:
    """Start the feature and session workers and wait for them (Ctrl-C stops all, each flushing first)."""
    from streaming.launch import worker_argv

    roles = ["features"] * workers + ["sessions"] * session_workers
    procs = [subprocess.Popen(worker_argv(items, role, long_term)) for role in roles]
    typer.echo(f"started {workers} feature and {session_workers} session worker(s): "
               f"pids {', '.join(str(p.pid) for p in procs)}")

    def stop(*_):
        for p in procs:
            p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        stop()
        codes = [p.wait() for p in procs]
    if any(codes):
        raise typer.Exit(max(codes))


@app.command("replay")
@user_errors
def replay(catalog: Path = typer.Option(..., help="catalog folder whose events.parquet to replay"),
           rate: float = typer.Option(0.0, help="events per second (0: as fast as possible)"),
           limit: int = typer.Option(None, help="replay only the first N events")) -> None:
    """Produce a catalog's logged events onto the events topic, in time order, keyed by user."""
    from tqdm import tqdm

    from infra.services import ensure_topics
    from infra.settings import load_settings
    from streaming.replay import load_events, replay as produce

    settings = load_settings()
    ensure_topics(settings)
    events = load_events(catalog)
    if limit:
        events = events.head(limit)
    with tqdm(total=len(events), unit="ev", desc="replay") as bar:
        out = produce(settings, events, rate, progress=bar.update)
    typer.echo(f"replayed {out['events']:,} events in {out['seconds']:.1f}s ({out['events_per_s']:,.0f}/s)")


@app.command("status")
@user_errors
def status(group: str = typer.Option("onevision-features"),
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Lag per partition, events/s and freshness per worker, DLQ and session counts."""
    from infra.settings import load_settings
    from streaming.status import stream_status

    s = stream_status(load_settings(), group)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    typer.echo(f"group {s['group']}: lag {s['lag']:,} events; DLQ {s['dlq']:,}; sessions logged {s['sessions']:,}")
    for p in s["partitions"]:
        typer.echo(f"  partition {p['partition']}: end {p['end']:,} applied {p['applied']:,} "
                   f"committed {p['committed']} lag {p['lag']:,}")
    for w in s["workers"]:
        typer.echo(f"  worker {w['worker_id']} {'alive' if w['alive'] else 'gone'}: {w['events']:,} events, "
                   f"{w['events_per_s']:,.0f}/s, freshness p50 {w['freshness_ms_p50']:.0f} ms "
                   f"p99 {w['freshness_ms_p99']:.0f} ms, partitions {w['partitions']}")


@app.command("start")
@user_errors
def start(items: Path = typer.Option(..., help=ITEMS_HELP),
          workers: int = typer.Option(1, min=1, help="feature workers"),
          session_workers: int = typer.Option(1, min=0, help="sessionizers"),
          long_term: str = typer.Option("mean")) -> None:
    """Start workers in the background (pid files and logs under the state dir)."""
    from infra.settings import load_settings
    from streaming.launch import start_workers

    for row in start_workers(load_settings(), items, workers, session_workers, long_term):
        typer.echo(f"{row['name']:<20} pid {row['pid']}  log {row['log']}")


@app.command("stop")
@user_errors
def stop() -> None:
    """Stop the background workers (each flushes and commits first)."""
    from infra.settings import load_settings
    from streaming.launch import stop_workers

    stopped = stop_workers(load_settings())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no worker was running")
