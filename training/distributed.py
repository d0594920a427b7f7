"""Data-parallel training on Ray Train: the recipes' own stages (`training/loop.py`), run by N
workers of a `ray.train.torch.TorchTrainer`.

Ray Train starts the workers (on a local Ray or an existing cluster) and joins them in one
torch.distributed process group: gloo on CPUs, NCCL on GPUs. Each worker loads the catalog and
the cached training data, then runs the same recipe function a single process would, under a
`Runtime` that tells the loop its rank: every batch is split across ranks and the gradients are
all-reduced (`runtime.average_gradients`; the recipes' losses call several model methods, not
one `forward`, so the loop averages gradients itself instead of wrapping the model in DDP, with
the same arithmetic). Rank 0 writes each epoch's checkpoint into the run directory, as the
plain loop does, and hands it to Ray Train (`ray.train.report` with a `Checkpoint`, kept under
`<run dir>.ray/`), so a rerun resumes exactly and the driver then loads the finished stages.

A task is named as `module:function` (a recipe's function of one dict of plain arguments), not
pickled: a worker imports it, so nothing but paths and numbers travels to the workers.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from training.configs import ParallelConfig

KEEP_CHECKPOINTS = 2  # Ray Train's copies of the newest epochs (the run directory keeps its own)


def resolve_task(ref: str) -> Callable[[dict], None]:
    """`module:function` -> the function."""
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"no distributed task {ref!r} (module:function): {e}") from None


def _worker(config: dict) -> None:
    """One Ray Train worker: its runtime (device, rank-0 progress, checkpoint reports), then the task."""
    import ray.train
    import torch

    from training.runtime import Runtime, use_runtime

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    parallel = ParallelConfig(**config["parallel"])
    if not Path(config["marker"]).is_file():
        raise RuntimeError(f"worker {rank} on {ray.util.get_node_ip_address()} cannot see {config['marker']}: on a "
                           "cluster (--address) the run directory must be on storage every node mounts at one path")
    if config["use_gpu"]:  # the driver's decision (it saw the cluster's GPUs), so every rank agrees
        import ray.train.torch

        device = str(ray.train.torch.get_device())
    else:
        device = "cpu"
        torch.set_num_threads(max(1, parallel.cpus_per_worker))

    def report(workdir: Path, log: dict) -> None:
        from ray.train import Checkpoint

        metrics = {"stage": log["stage"], "epoch": log["epoch"], "loss": log["epoch_loss"][-1]}
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(workdir)) if rank == 0 else None)

    with use_runtime(Runtime(device, parallel.precision, progress=rank == 0, on_checkpoint=report)):
        resolve_task(config["task"])(config["args"])


def run_on_ray(task: str, args: dict, parallel: ParallelConfig, storage: Path, name: str) -> float:
    """Run the task on `parallel.workers` Ray Train workers; returns the seconds it took. Ray is
    started locally (and stopped after) unless `parallel.address` names a cluster or one is up."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resolve_task(task)  # a wrong name fails here, before any worker starts
    if parallel.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {parallel.workers}")
    started = False
    if not ray.is_initialized():
        if parallel.address is not None:
            ray.init(address=parallel.address, log_to_driver=True)
        else:
            ray.init(num_cpus=parallel.workers * parallel.cpus_per_worker + 1, include_dashboard=False,
                     log_to_driver=True)
        started = True
    gpu = parallel.device.startswith("cuda") or \
        (parallel.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    storage = Path(storage).resolve()
    marker = storage / name / "driver.json"  # workers check they see it: the run directory is shared
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"task": task, "workers": parallel.workers, "use_gpu": gpu}))
    t0 = time.perf_counter()
    try:
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"task": task, "args": args, "parallel": parallel.__dict__, "use_gpu": gpu,
                               "marker": str(marker)},
            scaling_config=ScalingConfig(num_workers=parallel.workers, use_gpu=gpu,
                                         resources_per_worker={"CPU": parallel.cpus_per_worker}),
            run_config=RunConfig(storage_path=str(storage), name=name,
                                 checkpoint_config=CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS)))
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
    return time.perf_counter() - t0


def train_on_ray(task: str, args: dict, parallel: ParallelConfig, workdir: Path, name: str) -> dict:
    """`run_on_ray` for a recipe whose checkpoints live in `workdir`: Ray Train's own beside it
    (`ray_storage`), then the check that every rank ended with the same weights (`record_weights`,
    called by the task). Returns what the manifest records of the run."""
    ranks = ray_storage(workdir) / "ranks"
    shutil.rmtree(ranks, ignore_errors=True)
    seconds = run_on_ray(task, args, parallel, ray_storage(workdir), name)
    check_same_weights(ranks, parallel.workers)
    return {"workers": parallel.workers, "device": parallel.device, "seconds": round(seconds, 1)}


def ray_storage(workdir: Path) -> Path:
    """Where Ray Train keeps a run's checkpoints and the ranks' digests: beside the recipe's work
    directory, never inside it (a checkpoint of the directory would otherwise copy the older ones)."""
    workdir = Path(workdir)
    return workdir.parent / f"{workdir.name}.ray"


def weights_digest(model) -> str:
    """sha256 over a model's parameters and buffers, in name order."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def record_weights(model, folder: Path) -> None:
    """Each rank writes its final weights' digest (`rank-<r>.json`), so the driver can check that
    the group ended in step."""
    from training.runtime import world

    rank, size = world()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world": size,
                                                          "sha256": weights_digest(model)}))


def check_same_weights(folder: Path, workers: int) -> str:
    """The digest every rank reported; an error naming the ranks when they differ (data-parallel
    ranks must hold identical weights) or when some rank did not report."""
    found = {json.loads(p.read_text())["rank"]: json.loads(p.read_text())["sha256"] for p in folder.glob("rank-*.json")}
    missing = sorted(set(range(workers)) - set(found))
    if missing:
        raise RuntimeError(f"ranks {missing} of {workers} did not report their weights under {folder}")
    digests = {found[r] for r in range(workers)}
    if len(digests) != 1:
        raise RuntimeError(f"the {workers} ranks ended with different weights: "
                           + ", ".join(f"rank {r} {found[r][:12]}" for r in range(workers)))
    return digests.pop()
