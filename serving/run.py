"""The service as one foreground process: Serve on `--host`/`--port` with the application of
`serving.app.build`, until SIGTERM or Ctrl-C (then Serve and Ray shut down cleanly). What
`onevision serve start` and the quickstart run in the background.

Without `--address` it starts a local Ray; with one (or `serve.ray_address` in the settings) it
joins that cluster, so the replicas spread over its nodes. `--config serving/config.yaml` takes the
application's args and each deployment's options (replicas, autoscaling, CPUs and GPUs) from that
Serve config, the file `serve deploy` and KubeRay's RayService use; flags given here override its
args. Host, port, catalog and registry default to the settings' `serve` block (the config's
`http_options` are for `serve deploy`).

    python -m serving.run --catalog data/worlds/small --port 8000
    python -m serving.run --config serving/config.yaml --address ray-head:6379 --registry s3://bucket/registry
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

import yaml


def serve_config(path: Path) -> dict:
    """The application args of a Serve config's first application, with `deployments` =
    {name: options} from its deployments list."""
    app = yaml.safe_load(Path(path).read_text())["applications"][0]
    deployments = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments", [])}
    return {**app.get("args", {}), "deployments": deployments}


def main(argv: list[str] | None = None) -> None:
    from infra.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", help="path or URL (default: the settings' serve.catalog)")
    ap.add_argument("--registry", help="path or URL (default: the settings' serve.registry)")
    ap.add_argument("--experiments", type=Path, default=None,
                    help="experiment config (default serving/experiments.yaml)")
    ap.add_argument("--config", type=Path, default=None, help="a Serve config (serving/config.yaml) to deploy")
    ap.add_argument("--address", default=None, help="a Ray cluster to join (default: serve.ray_address, or local)")
    ap.add_argument("--host", default=None)
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--beam", type=int, default=None)
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from onevision.storage import is_url
    from serving.app import build
    from serving.experiments import DEFAULT_EXPERIMENTS

    settings = load_settings().serve
    app_args = serve_config(args.config) if args.config else {}
    host, port = args.host or settings.host, args.port or settings.port  # the config's http_options: `serve deploy`

    def located(value: str | None, default: str) -> str:
        value = value or default
        return value if is_url(value) else str(Path(value).resolve())

    app_args.update(catalog=located(args.catalog, app_args.get("catalog") or settings.catalog),
                    registry=located(args.registry, app_args.get("registry") or settings.registry),
                    experiments=str((args.experiments or Path(app_args.get("experiments") or DEFAULT_EXPERIMENTS))
                                    .resolve()))
    if args.beam:
        app_args["beam"] = args.beam
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    address = args.address or settings.ray_address
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build(app_args), name="onevision", route_prefix="/")
        print(f"OneVision serving on http://{host}:{port}/", flush=True)
        stop.wait()
    finally:
        try:
            if address:  # a shared cluster: take down this application only
                serve.delete("onevision")
            else:
                serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
