"""Where models run: `--device auto|cpu|cuda[:N]` resolved once, and the mixed precision that
goes with a device. CPU is the default everywhere and runs in float32 exactly as before."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto`: the first GPU when there is one, else the CPU; `cuda` without a GPU is an error that
    says so, not a crash deep in a recipe."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {name!r}: choose auto, cpu or cuda[:N]")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}); "
                         "use --device cpu, or install a CUDA build of torch")
    return device


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of `precision` (auto | fp32 | bf16 | fp16) on `device`: auto is bf16 on a GPU
    that has it, else fp16, and float32 (None: no autocast) on the CPU."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: choose auto, fp32, bf16 or fp16")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision on `device` when `dtype` is given; nothing at all otherwise."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


HOST_READS = frozenset({"numpy", "cpu", "tolist", "item", "__float__", "__int__", "__bool__", "__index__"})


class DeviceAudit(TorchFunctionMode):
    """Watches torch calls inside a `with` block: the devices of every tensor they return
    (`devices`) and every read of a tensor's values on the host (`host_reads`: .numpy(), .cpu(),
    .tolist(), .item(), float(t), bool(t), ... each a device-to-host copy and a sync on a GPU), in
    order. Used to check that a model's work stays on its device."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[torch.device] = set()
        self.host_reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.host_reads.append(name)
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.devices.add(t.device)
        return out
