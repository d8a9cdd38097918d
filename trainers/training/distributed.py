"""Data parallelism under `torchrun` (gloo, on the CPU or the GPU), or a plain single process.

Gradients are averaged with one flattened all-reduce after each backward. Doing it by hand
rather than through DDP keeps the VQ-GAN's adaptive GAN weight (two autograd.grad calls per
step) simple and lets both trainers share one mechanism; every rank starts from rank 0's weights,
so weights stay identical.

A rank that cannot start (rank 0 alone holds the run folder's lock) tells the others through
start_together, so every rank stops with one line instead of waiting at the next collective.
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist
from torch import nn

from sundae_core.errors import SundaeError


class AnotherRankRefused(SundaeError):
    """This rank could start, but another one could not: it stops too (that rank says why)."""


def setup() -> tuple[int, int]:
    """Initialise the process group when launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # torch._dynamo (imported lazily by the first optimiser) keeps references to a process
        # group that exists when it is imported, so destroy_process_group left gloo's threads
        # running and they died with the interpreter: 'terminate called without an active
        # exception', SIGABRT, on about 1 run in 20 (torch 2.13). Imported first, it holds none.
        import torch._dynamo  # noqa: F401
        # gloo even where CUDA is present: CPU runs' tensors are refused by nccl at the first
        # collective, and gloo also all-reduces the CUDA tensors of a GPU run (prior
        # train.device=cuda; slower than nccl, never measured on several GPUs here)
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def broadcast_module(module: nn.Module) -> None:
    if world() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def own_global_stream(seed: int, rank: int, step: int) -> None:
    """Give this rank's global random stream (dropout's, on the CPU and the GPU) a seed of its own:
    every rank seeded alike at the start, or resumed from rank 0's saved state, would draw the same
    dropout masks as rank 0. Rank 0 keeps its stream, so a one-process run is unchanged."""
    if rank > 0:
        torch.manual_seed(seed * 1000 + 250 + rank + 7919 * step)


def average_gradients(module: nn.Module) -> None:
    if world() == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world() > 1:
        dist.all_reduce(t)
    return t


def weights_digest(modules: dict[str, nn.Module]) -> str:
    """sha256 over every parameter and buffer, in order: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, module in modules.items():
        for key, t in module.state_dict().items():
            h.update(f"{name}/{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_in_sync(modules: dict[str, nn.Module]) -> list[str]:
    """Every rank's weights digest, in rank order ([] in a single process). Raises if the ranks'
    weights differ: the manual gradient averaging must keep them identical, and a silent drift
    would waste the rest of the run."""
    if world() == 1:
        return []
    digests: list = [None] * world()
    dist.all_gather_object(digests, weights_digest(modules))
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks hold different weights (digests {digests}); this is a bug")
    return digests


def start_together(refusal: Exception | None) -> None:
    """Every rank passes what refused it (None: ready to start); returns only when no rank was
    refused. Otherwise a refused rank raises its own error and every other rank AnotherRankRefused
    naming the first refused one, so all exit rather than wait for it at the next collective.
    A synchronisation point like barrier(): every rank must call it."""
    if world() > 1:
        first = torch.tensor([dist.get_rank() if refusal is not None else world()])
        dist.all_reduce(first, op=dist.ReduceOp.MIN)  # the lowest refused rank, or world() if none
        if int(first) < world():
            # every rank stops here: leave no gloo thread running at exit (one left behind aborted
            # the process, "terminate called without an active exception", on 1 run in ~20)
            rank = dist.get_rank()
            cleanup()
            if refusal is None:
                raise AnotherRankRefused(f"rank {int(first)} refused to start (its error line says why); "
                                         f"rank {rank} stops too")
    if refusal is not None:
        raise refusal


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
