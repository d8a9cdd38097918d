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
