"""The loop every generator stage runs: seeded shuffles, AdamW with warm-up + cosine LR,
progress bar, a checkpoint at every epoch end, resume from it, loss curve as PNG.

A checkpoint is `model.safetensors` + `optimizer.safetensors` (AdamW's moments as flat
tensors, so nothing is ever unpickled) + `state.json` (epoch, step, losses). Batches of epoch e
come from a permutation seeded by (seed, e), so a resumed stage sees exactly the batches an
uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm import tqdm

from onevision.device import autocast
from training.runtime import all_sum, average_gradients, barrier, current, shard, world

STATE, MODEL, OPTIMIZER = "state.json", "model.safetensors", "optimizer.safetensors"


@dataclass(frozen=True)
class StageConfig:
    epochs: int = 4
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_share: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    flat = {f"{i}.{k}": v.contiguous() for i, s in opt.state_dict()["state"].items() for k, v in s.items()
            if torch.is_tensor(v)}
    save_file(flat, str(path))


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    flat = load_file(str(path))
    state: dict[int, dict] = {}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def done(workdir: Path) -> bool:
    state = workdir / STATE
    return state.is_file() and json.loads(state.read_text()).get("finished", False)


def run_stage(name: str, model: torch.nn.Module, n_examples: int, loss_fn: Callable[[np.ndarray], torch.Tensor],
              cfg: StageConfig, workdir: Path, progress: bool = True,
              on_epoch: Callable[[int], None] | None = None) -> dict:
    """Train `model` over `n_examples` (loss_fn gets the batch's example indices); resumable.
    `on_epoch(e)` runs before epoch e (0-based), a resumed one included: a schedule over epochs
    such as the pruning curriculum.

    It runs on the current runtime (`training.runtime`): the model moves to its device, the loss is
    computed under its mixed precision, and in a data-parallel group each rank takes its share of
    every batch and the gradients are averaged before the (identical) optimizer steps; rank 0 writes
    the checkpoints. One process on the CPU is exactly the plain loop."""
    rt = current()
    device, amp = rt.torch_device, rt.amp
    rank, size = world()
    model.to(device)
    workdir.mkdir(parents=True, exist_ok=True)
    if done(workdir):  # a finished stage is its checkpoint, whatever the examples are now
        load_model(model, str(workdir / MODEL), device=str(device))
        return json.loads((workdir / STATE).read_text())
    if n_examples == 0:  # never a silent zero-example stage: say so, keep the model as it is
        print(f"{name}: no training examples in this catalog: stage skipped, the model stays as it was")
        log = {"stage": name, "config": asdict(cfg), "epoch": 0, "step": 0, "losses": [], "epoch_loss": [],
               "seconds": 0.0, "finished": True, "skipped": "no examples"}
        if rank == 0:
            save_model(model, str(workdir / MODEL))
            (workdir / STATE).write_text(json.dumps(log))
        barrier()
        return log
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None  # bf16 needs none
    per_epoch = max(1, math.ceil(n_examples / cfg.batch_size))
    total = per_epoch * cfg.epochs
    lr_at = _lr_lambda(total, max(1, int(cfg.warmup_share * total)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log = {"stage": name, "config": asdict(cfg), "epoch": 0, "step": 0, "losses": [], "epoch_loss": [],
           "seconds": 0.0, "finished": False}
    if (workdir / STATE).is_file():
        log = json.loads((workdir / STATE).read_text())
        load_model(model, str(workdir / MODEL), device=str(device))
        if log["finished"]:
            return log
        _load_optimizer(opt, workdir / OPTIMIZER)
        sched.last_epoch = log["step"]  # continue the schedule where the checkpoint left it
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * lr_at(log["step"])
    model.train()
    t0 = time.perf_counter() - log["seconds"]
    with tqdm(total=total, initial=log["step"], desc=name, unit="step", disable=not (progress and rt.progress)) as bar:
        for epoch in range(log["epoch"], cfg.epochs):
            if on_epoch is not None:
                on_epoch(epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(n_examples)
            torch.manual_seed(cfg.seed * 1000 + epoch)
            running = []
            for b in range(per_epoch):
                batch = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                local = shard(batch)
                opt.zero_grad(set_to_none=True)
                if len(local):
                    with autocast(device, amp):
                        loss = loss_fn(local)
                else:  # a last batch smaller than the group: this rank adds a zero gradient
                    loss = torch.zeros((), device=device)
                value = float(loss.detach()) if size == 1 else \
                    all_sum(float(loss.detach()) * len(local), device) / len(batch)
                if not np.isfinite(value):  # every rank sees the same value and stops together
                    raise FloatingPointError(f"{name}: the loss is {value} at epoch {epoch}, batch {b}; "
                                             "the last checkpoint is kept, nothing was saved from this epoch")
                if len(local):
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                average_gradients(params, len(local), len(batch))
                if scaler is not None:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                running.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
            log["losses"].extend(running)
            log["epoch_loss"].append(float(np.mean(running)))
            log.update(epoch=epoch + 1, step=(epoch + 1) * per_epoch, seconds=time.perf_counter() - t0,
                       finished=epoch + 1 == cfg.epochs)
            if rank == 0:
                save_model(model, str(workdir / MODEL))
                _save_optimizer(opt, workdir / OPTIMIZER)
                tmp = workdir / (STATE + ".tmp")
                tmp.write_text(json.dumps(log))
                tmp.replace(workdir / STATE)
            barrier()
            if rt.on_checkpoint is not None:
                rt.on_checkpoint(workdir, log)
    model.eval()
    if rank == 0:
        plot_losses(log, workdir / "loss.png")
    return log


def plot_losses(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(log["losses"])
    if not len(losses):
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(losses, lw=0.6, alpha=0.4, label="batch")
    k = max(1, len(losses) // 50)
    ax.plot(np.arange(len(losses))[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), lw=1.5,
            label=f"mean of {k}")
    ax.set(title=f"{log['stage']} loss", xlabel="step", ylabel="loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
