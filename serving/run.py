"""The service as one foreground process: a local Ray, Serve on `--port`, the application of
`serving.app.build`, until SIGTERM or Ctrl-C (then Serve and Ray shut down cleanly). What
`onevision serve start` and the quickstart run in the background; `serve run
serving/config.yaml` is the same application on an existing or new Ray cluster.

    python -m serving.run --catalog data/worlds/small --port 8000
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--registry", type=Path, default=Path("data/registry"))
    ap.add_argument("--experiments", type=Path, default=None,
                    help="experiment config (default serving/experiments.yaml)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--beam", type=int, default=256)
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from serving.app import DEFAULT_EXPERIMENTS, build

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build({"catalog": str(args.catalog.resolve()), "registry": str(args.registry.resolve()),
                         "experiments": str((args.experiments or DEFAULT_EXPERIMENTS).resolve()), "beam": args.beam}),
                  name="onevision", route_prefix="/")
        print(f"OneVision serving on http://{args.host}:{args.port}/", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
