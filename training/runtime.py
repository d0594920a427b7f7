"""Where and how a recipe's stages run: the device, the precision, and the data-parallel group
of this process (Ray Train's workers, `training/distributed.py`).

The recipes do not take these as arguments: a stage reads the runtime that is current
(`use_runtime`), so the same recipe code runs in one process on the CPU, on a GPU, or as one of
N Ray Train workers. The default is today's: one process, the CPU, float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onevision.device import amp_dtype, resolve_device


@dataclass(frozen=True)
class Runtime:
    device: str = "cpu"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | fp32 | bf16 | fp16: mixed precision on a GPU, float32 on the CPU
    progress: bool = True  # whether this process draws progress bars (Ray Train: rank 0 only)
    # called after each epoch's checkpoint is written, with the stage's folder and log (Ray Train
    # hands the checkpoint to its storage here)
    on_checkpoint: Callable[[Path, dict], None] | None = None

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def amp(self) -> torch.dtype | None:
        return amp_dtype(self.torch_device, self.precision)


_current = Runtime()


def current() -> Runtime:
    return _current


@contextlib.contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Run the stages inside on `runtime`."""
    global _current
    before, _current = _current, runtime
    try:
        yield runtime
    finally:
        _current = before


def world() -> tuple[int, int]:
    """(rank, size) of this process's data-parallel group; (0, 1) outside one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(idx: np.ndarray) -> np.ndarray:
    """This rank's part of a batch's example indices (strided, so sizes differ by at most one)."""
    rank, size = world()
    return idx if size == 1 else idx[rank::size]


def average_gradients(params: list[torch.nn.Parameter], local: int, total: int) -> None:
    """Make every rank's gradients the gradient of the whole batch's mean loss: each rank's
    (of its `local` examples' mean) weighted by local / total, summed over the group in one flat
    all-reduce. Gradients the rank did not produce count as zero. Nothing happens in a group of one."""
    _reduce_gradients(params, local / total)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every rank's gradients: for a loss each rank computes over the whole batch from rows
    it gathered (`gather_rows`), whose graph reaches only the rank's own rows, the sum is the
    whole loss's gradient. Nothing happens in a group of one."""
    _reduce_gradients(params, 1.0)


def _reduce_gradients(params: list[torch.nn.Parameter], scale: float) -> None:
    rank, size = world()
    if size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    # which parameters got a gradient on some rank; one none did keeps None (AdamW then skips it, as alone)
    used = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [used])
    flat[:-len(params)] *= scale
    torch.distributed.all_reduce(flat)
    start = 0
    for p, g, any_rank in zip(params, grads, flat[-len(params):].tolist()):
        n = g.numel()
        p.grad = flat[start:start + n].view_as(p).clone() if any_rank else None
        start += n


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """The whole batch's rows (total, ...) from every rank's strided share (`shard` of
    range(total)), in batch order: this rank's rows keep their autograd graph, the other ranks'
    arrive as constants. For losses over the whole batch (in-batch negatives). Identity in a group of one."""
    rank, size = world()
    if size == 1:
        return local
    width = -(-total // size)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[:len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(size)]
    torch.distributed.all_gather(parts, padded)
    counts = [len(range(r, total, size)) for r in range(size)]
    parts = [local if r == rank else parts[r][:counts[r]] for r in range(size)]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    order = torch.as_tensor([offsets[i % size] + i // size for i in range(total)], device=local.device)
    return torch.cat(parts)[order]


def all_sum(value: float, device: torch.device) -> float:
    """The sum of `value` over the group (itself in a group of one); `device`: where the group's
    backend reduces (the GPU for NCCL)."""
    rank, size = world()
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t[0])


def gather_strided(local: np.ndarray, total: int, device: torch.device) -> np.ndarray:
    """The whole (total, ...) integer array from every rank's strided share (`shard` of
    range(total): this rank holds rows rank::size), on every rank; `local` itself in a group of
    one. `device`: where the group's backend reduces (the GPU for NCCL)."""
    rank, size = world()
    if size == 1:
        return local
    full = np.zeros((total, *local.shape[1:]), np.int64)
    full[rank::size] = local
    t = torch.from_numpy(full).to(device)
    torch.distributed.all_reduce(t)  # every other rank adds zeros to this rank's rows
    return t.cpu().numpy()


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()
