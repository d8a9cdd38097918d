"""Where a trainer runs (`train.device`): the CPU, or under torchrun the GPU of each rank's
LOCAL_RANK, and how batches, drawn from generators and data kept in RAM, get there."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch

from sundae_core.cpu_features import cpu_bf16_is_fast
from sundae_core.errors import ConfigError

from . import distributed as dist

DEVICES = ("cpu", "cuda")


def check_device_name(name: str) -> None:
    """ConfigError unless `name` is a train.device this project trains on."""
    if name not in DEVICES:
        raise ConfigError(f"train.device must be 'cpu' or 'cuda', got {name!r}")


def train_device(name: str, rank: int) -> torch.device:
    """The device this rank trains on: the CPU, or the GPU of its LOCAL_RANK under torchrun."""
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but this torch sees no GPU (a CPU build, or no driver); "
                          "set train.device=cpu or install a CUDA build of torch")
    local = int(os.environ.get("LOCAL_RANK", rank))
    if local >= torch.cuda.device_count():
        raise ConfigError(f"rank {rank} needs GPU {local} but this machine has {torch.cuda.device_count()}; "
                          "start torchrun with --nproc-per-node at most the number of GPUs")
    return torch.device("cuda", local)


def to_device(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """A batch made on the CPU, on `device`. Pinned first, so the copy is queued behind the running
    step instead of waiting for it (a copy from pageable memory synchronises the stream)."""
    if t is None or device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def autocast_bf16(device: torch.device, requested: bool, say: Callable[[str], None] | None = None) -> bool:
    """Whether a trainer autocasts to bf16: as `requested` (`train.bf16`), except on a CPU that does
    not multiply bf16 in hardware (cpu_features), where torch's bf16 is 3-300x slower than float32
    (oneDNN's emulation on AVX-512, fallback loops on AVX2): there it trains in float32 and `say`s so (default: printed by the main rank). A run
    configured for bf16 on another machine resumes here at float32's speed instead of the loops'."""
    if requested and device.type == "cpu" and not cpu_bf16_is_fast():
        (say or (print if dist.is_main() else lambda _: None))(
            "note: train.bf16 is set, but this CPU does not multiply bf16 in hardware (no AVX512-BF16 or "
            "AMX; torch's bf16 runs 3-300x slower than float32 there): training in float32 instead; set "
            "train.bf16=false to silence this")
        return False
    return requested


def bf16_autocast(device: torch.device, enabled: bool) -> Callable[[], AbstractContextManager]:
    """A factory of the context a trainer's forward passes run in: bf16 autocast on `device`
    (`train.bf16`), or a no-op context."""
    if not enabled:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
