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
    such as the pruning curriculum."""
    workdir.mkdir(parents=True, exist_ok=True)
    if done(workdir):  # a finished stage is its checkpoint, whatever the examples are now
        load_model(model, str(workdir / MODEL))
        return json.loads((workdir / STATE).read_text())
    if n_examples == 0:  # never a silent zero-example stage: say so, keep the model as it is
        print(f"{name}: no training examples in this catalog: stage skipped, the model stays as it was")
        log = {"stage": name, "config": asdict(cfg), "epoch": 0, "step": 0, "losses": [], "epoch_loss": [],
               "seconds": 0.0, "finished": True, "skipped": "no examples"}
        save_model(model, str(workdir / MODEL))
        (workdir / STATE).write_text(json.dumps(log))
        return log
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = max(1, math.ceil(n_examples / cfg.batch_size))
    total = per_epoch * cfg.epochs
    lr_at = _lr_lambda(total, max(1, int(cfg.warmup_share * total)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log = {"stage": name, "config": asdict(cfg), "epoch": 0, "step": 0, "losses": [], "epoch_loss": [],
           "seconds": 0.0, "finished": False}
    if (workdir / STATE).is_file():
        log = json.loads((workdir / STATE).read_text())
        load_model(model, str(workdir / MODEL))
        if log["finished"]:
            return log
        _load_optimizer(opt, workdir / OPTIMIZER)
        sched.last_epoch = log["step"]  # continue the schedule where the checkpoint left it
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * lr_at(log["step"])
    model.train()
    t0 = time.perf_counter() - log["seconds"]
    with tqdm(total=total, initial=log["step"], desc=name, unit="step", disable=not progress) as bar:
        for epoch in range(log["epoch"], cfg.epochs):
            if on_epoch is not None:
                on_epoch(epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(n_examples)
            torch.manual_seed(cfg.seed * 1000 + epoch)
            running = []
            for b in range(per_epoch):
                loss = loss_fn(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{name}: the loss is {float(loss)} at epoch {epoch}, batch {b}; "
                                             "the last checkpoint is kept, nothing was saved from this epoch")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                running.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
            log["losses"].extend(running)
            log["epoch_loss"].append(float(np.mean(running)))
            log.update(epoch=epoch + 1, step=(epoch + 1) * per_epoch, seconds=time.perf_counter() - t0,
                       finished=epoch + 1 == cfg.epochs)
            save_model(model, str(workdir / MODEL))
            _save_optimizer(opt, workdir / OPTIMIZER)
            tmp = workdir / (STATE + ".tmp")
            tmp.write_text(json.dumps(log))
            tmp.replace(workdir / STATE)
    model.eval()
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
