"""`onevision stream worker | run | replay | status`: the streaming feature pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from onevision.behaviour.long_term import LongTermConfig
from onevision_cli.errors import user_errors
from streaming.run_worker import WorkerRun, run_worker
from streaming.worker_config import DEFAULT_GROUP, WorkerConfig

app = typer.Typer(help="Kafka -> Feast streaming: feature workers, replays, status.", no_args_is_help=True)

ITEMS = typer.Option(..., help="item SID table: a tokenizer version folder in the registry or an item_sids.parquet")
LONG_TERM = typer.Option(LongTermConfig.mode, help="long-term SID: mean (re-quantized mean) or onesearch (eq. 3)")
FEATURE_WORKERS = typer.Option(1, min=1, help="feature worker processes sharing the partitions")
SESSION_WORKERS = typer.Option(1, min=0, help="sessionizer processes")


@app.command("worker")
@user_errors
def worker(items: Path = ITEMS,
           role: str = typer.Option(WorkerConfig.role, help="features (Feast rows) or sessions (session logs)"),
           group: str = typer.Option(WorkerConfig.group, help="consumer group and Redis namespace "
                                                              "(default: onevision-<role>)"),
           long_term: str = LONG_TERM,
           max_idle: float = typer.Option(WorkerRun.max_idle_s, help="exit after this many seconds without events"),
           session_idle: float = typer.Option(WorkerConfig.session_idle_s,
                                              help="sessions: close one after this many seconds without events"),
           log_level: str = typer.Option(WorkerRun.log_level)) -> None:
    """Run one feature worker in the foreground (several share the partitions of a group)."""
    config = WorkerConfig(role=role, group=group, long_term=LongTermConfig(mode=long_term), session_idle_s=session_idle)
    run_worker(WorkerRun(items, config, max_idle, log_level))


def _show(rows: list[dict]) -> None:
    for row in rows:
        typer.echo(f"{row['name']:<20} pid {row['pid']}  log {row['log']}")


@app.command("run")
@user_errors
def run(items: Path = ITEMS, workers: int = FEATURE_WORKERS, session_workers: int = SESSION_WORKERS,
        long_term: str = LONG_TERM) -> None:
    """Run the feature and session workers and wait for them (Ctrl-C stops all, each flushing first;
    pid files and logs under the state dir, as `start`)."""
    from infra.settings import load_settings
    from streaming.launch import run_workers

    code = run_workers(load_settings(), items, workers, session_workers, long_term, started=_show)
    if code:
        raise typer.Exit(code)


@app.command("replay")
@user_errors
def replay(catalog: Path = typer.Option(..., help="catalog folder whose events.parquet to replay"),
           rate: float = typer.Option(0.0, help="events per second (0: as fast as possible)"),
           limit: int = typer.Option(None, help="replay only the first N events")) -> None:
    """Produce a catalog's logged events onto the events topic, in time order, keyed by user."""
    from tqdm import tqdm

    from infra.services import ensure_topics
    from infra.settings import load_settings
    from streaming.replay import load_events
    from streaming.replay import replay as produce

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
def status(group: str = typer.Option(DEFAULT_GROUP),
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
def start(items: Path = ITEMS, workers: int = FEATURE_WORKERS, session_workers: int = SESSION_WORKERS,
          long_term: str = LONG_TERM) -> None:
    """Start workers in the background (pid files and logs under the state dir)."""
    from infra.settings import load_settings
    from streaming.launch import start_workers

    _show(start_workers(load_settings(), items, workers, session_workers, long_term))


@app.command("stop")
@user_errors
def stop() -> None:
    """Stop the background workers (each flushes and commits first)."""
    from infra.settings import load_settings
    from streaming.launch import stop_workers

    stopped = stop_workers(load_settings())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no worker was running")
