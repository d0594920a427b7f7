"""The data-parallel arithmetic on a real two-process gloo group (torch.distributed, no Ray), with
uneven shards (7 rows: 4 and 3): averaged shard gradients are the whole batch's gradient and a
parameter no rank used keeps none; a whole-batch loss over gathered rows (`gather_rows`, the
alignment's in-batch negatives) with summed gradients is the single process's; strided integer
shares (DPO's beam negatives, SIDs of shape (rows, negatives, levels)) reassemble on every rank."""

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.runtime import average_gradients, gather_rows, gather_strided, shard, sum_gradients

BATCH = 7


def _model() -> torch.nn.ModuleDict:
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"used": torch.nn.Linear(5, 3), "unused": torch.nn.Linear(5, 3)})


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 5, generator=g), torch.randn(BATCH, 3, generator=g)


def _mean_loss(model, x, y) -> torch.Tensor:
    return ((model["used"](x) - y) ** 2).mean()  # the mean over the examples given


def _batch_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """InfoNCE-like (every row against every other row of the whole batch), each row weighted by
    its position, so rows gathered out of batch order would change it."""
    per_row = torch.nn.functional.cross_entropy(a @ b.T, torch.arange(len(a)), reduction="none")
    return (per_row * torch.arange(1.0, len(a) + 1)).mean()


def _candidates() -> np.ndarray:
    return np.arange(BATCH * 4 * 3).reshape(BATCH, 4, 3) - 5  # negatives included, as -1 fills are


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        idx = shard(np.arange(BATCH))
        model, (x, y) = _model(), _data()
        _mean_loss(model, x[idx], y[idx]).backward()
        average_gradients(list(model.parameters()), len(idx), BATCH)
        result = {f"mean.{n}": p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
        model, (x, y) = _model(), _data()
        h = model["used"](x[idx])  # this rank's rows only
        _batch_loss(gather_rows(h, BATCH), gather_rows(h + 1.0, BATCH)).backward()
        sum_gradients(list(model.parameters()))
        result.update({f"batch.{n}": p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
        full = gather_strided(_candidates()[idx], BATCH, torch.device("cpu"))
        np.savez(f"{out}/rank-{rank}.npz", idx=idx, candidates=full, **result)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_uneven_ranks_compute_what_one_process_does(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [dict(np.load(tmp_path / f"rank-{r}.npz")) for r in (0, 1)]
    assert [len(r["idx"]) for r in ranks] == [4, 3]
    model, (x, y) = _model(), _data()
    _mean_loss(model, x, y).backward()
    whole = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    model, (x, y) = _model(), _data()
    h = model["used"](x)
    _batch_loss(h, h + 1.0).backward()
    batch = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    for r in ranks:
        assert not any(k.endswith(("unused.weight", "unused.bias")) for k in r)  # AdamW skips it, as alone
        for name in whole:
            np.testing.assert_allclose(r[f"mean.{name}"], whole[name], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(r[f"batch.{name}"], batch[name], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(r["candidates"], _candidates())
