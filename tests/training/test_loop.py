"""The stage loop: a stage killed mid-epoch and resumed ends with exactly the weights of an
uninterrupted run; checkpoints are safetensors; a finished stage is loaded, not retrained."""

import json

import numpy as np
import torch

from training.loop import MODEL, OPTIMIZER, STATE, StageConfig, run_stage

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))


def loss_fn(m):
    return lambda idx: ((m(X[idx]).squeeze(-1) - Y[idx]) ** 2).mean()


def test_interrupted_stage_resumes_exactly(tmp_path):
    cfg = StageConfig(epochs=3, batch_size=16, lr=1e-2)
    straight = model()
    run_stage("s", straight, 64, loss_fn(straight), cfg, tmp_path / "a", progress=False)

    crashing = model()
    calls = {"n": 0}

    def crash_in_epoch_two(idx):
        calls["n"] += 1
        if calls["n"] == 4 * 1 + 2:  # 4 batches an epoch: die inside the second epoch
            raise KeyboardInterrupt
        return loss_fn(crashing)(idx)

    try:
        run_stage("s", crashing, 64, crash_in_epoch_two, cfg, tmp_path / "b", progress=False)
    except KeyboardInterrupt:
        pass
    assert json.loads((tmp_path / "b" / STATE).read_text())["epoch"] == 1
    assert (tmp_path / "b" / MODEL).is_file() and (tmp_path / "b" / OPTIMIZER).is_file()
    resumed = model()
    log = run_stage("s", resumed, 64, loss_fn(resumed), cfg, tmp_path / "b", progress=False)
    assert log["finished"] and log["epoch"] == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    again = model()
    run_stage("s", again, 64, lambda idx: (_ for _ in ()).throw(AssertionError("retrained")), cfg, tmp_path / "b",
              progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), resumed.state_dict().values()))
    assert np.isfinite(log["losses"]).all() and log["epoch_loss"][-1] < log["epoch_loss"][0]
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000


def test_a_stage_without_examples_is_skipped_out_loud_and_never_overwrites_a_finished_one(tmp_path, capsys):
    cfg = StageConfig(epochs=1, batch_size=16, lr=1e-2)
    m = model()
    before = [p.detach().clone() for p in m.parameters()]
    log = run_stage("empty", m, 0, loss_fn(m), cfg, tmp_path / "empty", progress=False)
    assert log["skipped"] == "no examples" and log["finished"]
    assert "empty: no training examples" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))

    trained = model()
    run_stage("s", trained, 64, loss_fn(trained), cfg, tmp_path / "s", progress=False)
    again = model()  # a rerun that (wrongly) finds no examples still gets the finished stage's weights
    log = run_stage("s", again, 0, loss_fn(again), cfg, tmp_path / "s", progress=False)
    assert not log.get("skipped")
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), again.parameters()))


def test_a_non_finite_loss_stops_the_stage_with_its_name(tmp_path):
    import pytest

    m = model()
    with pytest.raises(FloatingPointError, match="nan-stage: the loss is nan"):
        run_stage("nan-stage", m, 64, lambda idx: torch.tensor(float("nan"), requires_grad=True),
                  StageConfig(epochs=1, batch_size=16), tmp_path / "n", progress=False)
    assert not (tmp_path / "n" / STATE).exists()
