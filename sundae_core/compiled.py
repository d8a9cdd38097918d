"""Opt-in torch.compile for sampling and decoding: Inductor with the weights frozen into the graph.

Eager bf16 inference on a CPU spends about a third of a prior step outside the matmuls (attention,
GELU, layer norms, adds); Inductor fuses that work. Measured on this project's CPU (sundae-bench
--compile, ffhq1024, one thread, the other core busy): the prior ran 5 % faster, the f = 32
decoder slower (12.3 s against 7.8 s), after 109 s of compiling. Compiling happens once per model
(and once more when the batch size first changes; the batch is then a dynamic dimension), so it is
opt-in and only worth trying for long jobs: benchmarks, FID runs, big batches.
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


def compiled_logits_fn(model: torch.nn.Module):
    """A LogitsFn (sampler.PriorLogits) that checks its inputs eagerly and runs the trunk compiled."""
    from .sampler import PriorLogits

    return PriorLogits(model, compile=True)


def compiled_decode_fn(vqgan: torch.nn.Module):
    """VQGAN.decode with the token checks and code lookup eager and the decoder compiled."""
    require_compiler(next(vqgan.parameters()).device)
    decoder = frozen_compile(vqgan.decode_latents)

    def decode(tokens: torch.Tensor) -> torch.Tensor:
        return decoder(vqgan.lookup_tokens(tokens)).float().clamp(-1, 1)

    return decode
