"""Opt-in torch.compile for sampling: Inductor with the weights frozen into the graph.

Frozen weights let Inductor prepack every linear layer for oneDNN with its bias and GELU fused
and fuse the norms, adds and rotary work between them. Measured on an Intel Xeon with AMX, 2
threads, bf16, the FFHQ1024 preset prior (random weights), one denoising step: eager 210 ms,
compiled 179 ms (1.49x its FLOP floor; outside matmul and attention kernels 18 % of the time,
eager 22 %). Only the prior is compiled: the f = 32 megapixel decoder compiled was slower than
eager in every CPU measurement (AMX, 2 threads: 4.55 s against 2.77 s in session 12's sundae-bench;
Inductor's fused GroupNorm + SiLU over a 128 x 1024 x 1024 channels-last bf16 activation takes
457 ms where eager's GroupNorm and in-place SiLU take 133 ms). Compiling costs tens of seconds at
the first call (and again when the batch size first changes; the batch is then a dynamic
dimension), so it is opt-in (--compile in the CLIs): worth it for long jobs (benchmarks, FID
runs, big batches), not for one picture.
"""

from __future__ import annotations

import shutil
from typing import Callable

import torch
import torch._inductor.config

from .errors import InputError

COMPILERS = ("c++", "g++", "clang++")


def require_compiler(device: torch.device | str) -> None:
    """Inductor builds C++ kernels on the CPU; say how to get a compiler instead of failing deep."""
    if torch.device(device).type == "cpu" and not any(shutil.which(c) for c in COMPILERS):
        raise InputError("--compile needs a C++ compiler for torch.compile's CPU kernels: install one "
                         "(apt-get install g++) or run without --compile")


def frozen_compile(fn: Callable) -> Callable:
    """torch.compile for inference with Inductor's freezing: weights become constants, so linear
    layers are prepacked for oneDNN with their bias and GELU fused in, and conv weights go
    channels-last. `torch.compile(..., options={"freezing": True})` does not do this (torch 2.13:
    the weights stay graph inputs and every linear is a plain addmm, measured on the generated
    code); the global flag must be set while Inductor compiles, which happens lazily at a first
    call and again when a new input shape recompiles, so every call runs under the patch."""
    compiled = torch.compile(fn)

    def call(*args):
        with torch._inductor.config.patch(freezing=True):
            return compiled(*args)

    return call


def compiled_features_fn(model: torch.nn.Module):
    """The prior's trunk (tokens, labels) -> features, compiled for inference; the input checks
    and the vocabulary head stay eager (the head runs on a varying number of positions)."""
    require_compiler(next(model.parameters()).device)
    return frozen_compile(model.unchecked_features)

