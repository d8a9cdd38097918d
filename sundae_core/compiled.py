"""Opt-in torch.compile for sampling and decoding: Inductor with the weights frozen into the graph.

Eager bf16 inference on a CPU spends much of each step outside the matmuls: unfused layer norms,
GELUs, rotary and residual adds, each a pass over memory. Inductor fuses them, and freezing lets
it fold the (constant) weights into oneDNN's packed bf16 layout once. Compiling costs one to two
minutes per model (and one more the first time the batch size changes, after which the batch is
a dynamic dimension), so it pays for long jobs: benchmarks, FID runs, big batches, not one picture.
"""

from __future__ import annotations

import shutil

import torch

from .errors import InputError

COMPILERS = ("c++", "g++", "clang++")


def require_compiler(device: torch.device | str) -> None:
    """Inductor builds C++ kernels on the CPU; say how to get a compiler instead of failing deep."""
    if torch.device(device).type == "cpu" and not any(shutil.which(c) for c in COMPILERS):
        raise InputError("--compile needs a C++ compiler for torch.compile's CPU kernels: install one "
                         "(apt-get install g++) or run without --compile")


def compiled_logits_fn(model: torch.nn.Module):
    """A LogitsFn that checks its inputs eagerly and runs the network compiled (inference only)."""
    require_compiler(next(model.parameters()).device)
    network = torch.compile(model.unchecked_logits, options={"freezing": True})

    def logits_fn(tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        model.check_inputs(tokens, labels)
        return network(tokens, labels)

    return logits_fn


def compiled_decode_fn(vqgan: torch.nn.Module):
    """VQGAN.decode with the token checks and code lookup eager and the decoder compiled."""
    require_compiler(next(vqgan.parameters()).device)
    decoder = torch.compile(vqgan.decode_latents, options={"freezing": True})

    def decode(tokens: torch.Tensor) -> torch.Tensor:
        return decoder(vqgan.lookup_tokens(tokens)).float().clamp(-1, 1)

    return decode
