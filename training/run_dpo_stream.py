"""One near-streaming DPO job process, however it is started: `training.launch` runs it as
`python -m training.run_dpo_stream --config '<json>'` (a `DPOStreamRun`), and a foreground
command calls `run_dpo_stream` itself, so the job runs the same way either way."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from infra.process import config_from_argv
from infra.settings import load_settings
from training.configs import DPOStreamRun, GateConfig, StreamConfig

OPTIONS = {"run": ("max_idle_s", "threads", "log_level"),
           "stream": tuple(f.name for f in dataclasses.fields(StreamConfig) if f.name != "gate"),
           "gate": tuple(f.name for f in dataclasses.fields(GateConfig))}


def dpo_stream_run(catalog: Path, registry: Path, model: str, cache: Path, options: dict | None = None) -> DPOStreamRun:
    """A run with absolute paths (a started process runs elsewhere); `options` set fields of the
    run, of its `StreamConfig` or of that config's `GateConfig` by name ({"micro_batch": 16,
    "orders": 40})."""
    placed: dict[str, dict] = {"run": {}, "stream": {}, "gate": {}}
    for key, value in (options or {}).items():
        where = next((w for w, names in OPTIONS.items() if key in names), None)
        if where is None:
            raise ValueError(f"the DPO stream job has no option {key!r}")
        placed[where][key] = value
    gate = dataclasses.replace(StreamConfig().gate, **placed["gate"])
    return DPOStreamRun(Path(catalog).resolve(), Path(registry).resolve(), model, Path(cache).resolve(),
                        StreamConfig(**placed["stream"], gate=gate), **placed["run"])


def run_dpo_stream(run: DPOStreamRun) -> dict:
    """Run the job with the environment's settings until stopped or idle for `max_idle_s`; its totals."""
    import torch

    from onevision.catalog.format import load_catalog
    from training.dpo_stream import DPOStreamJob

    logging.basicConfig(level=run.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    torch.set_num_threads(run.threads)
    job = DPOStreamJob(load_settings(), load_catalog(run.catalog), run.registry, run.model, run.cache, run.config,
                       device=run.device)
    return job.run(max_idle_s=run.max_idle_s)


def summary(totals: dict) -> str:
    return (f"dpo-stream: {totals['versions']} versions ({totals['accepted']} accepted, {totals['rejected']} rejected) "
            f"from {totals['sessions']} sessions, {totals['examples']} examples")


def main(argv: list[str] | None = None) -> None:
    from infra.lease import LeaseHeld

    try:
        totals = run_dpo_stream(config_from_argv(DPOStreamRun, argv))
    except LeaseHeld as err:  # another job on this model: one line, not a traceback
        sys.exit(f"dpo-stream: {err}")
    print(summary(totals), flush=True)


if __name__ == "__main__":
    main()
