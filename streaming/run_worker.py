"""One stream worker process, however it is started: `streaming.launch` runs it as
`python -m streaming.run_worker --config '<json>'` (a `WorkerRun`), and a foreground command
calls `run_worker` itself, so every worker runs the same way and no launcher needs a command line."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from infra.process import config_from_argv
from infra.settings import load_settings
from onevision.items import load_item_table
from streaming.worker_config import WorkerConfig

log = logging.getLogger(__name__)
LONG_TERM_MODES = ("mean", "onesearch")


@dataclass
class WorkerRun:
    items: Path  # item SID table: a tokenizer version folder or an item_sids.parquet
    config: WorkerConfig = field(default_factory=WorkerConfig)
    max_idle_s: float | None = None  # exit after this many seconds without events (None: run until stopped)
    log_level: str = "INFO"


def run_worker(run: WorkerRun) -> None:
    """Run the worker of `run.config.role` until stopped (SIGTERM/SIGINT) or idle for `max_idle_s`,
    with the settings of the environment."""
    from streaming.worker import worker_for  # Kafka, Redis and Feast: only when a worker runs

    logging.basicConfig(level=run.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    config = run.config
    if config.long_term.mode not in LONG_TERM_MODES:
        raise ValueError(f"the long-term mode must be mean or onesearch, not {config.long_term.mode!r}")
    table = load_item_table(run.items)
    if config.long_term.mode == "mean" and table.vectors is None:
        log.warning("%s has no item vectors (tokenizer trained before they were written); "
                    "long-term SIDs use OneSearch eq. 3 instead", run.items)
        config = replace(config, long_term=replace(config.long_term, mode="onesearch"))
    worker_for(load_settings(), table, config).run(max_idle_s=run.max_idle_s)


def main(argv: list[str] | None = None) -> None:
    run_worker(config_from_argv(WorkerRun, argv))


if __name__ == "__main__":
    main()
