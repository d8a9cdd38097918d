"""SUNDAE's training corruption (section 3.3): per sample t ~ U[0,1], per position R ~ U[0,1];
where R < t the token is replaced by a uniformly random token."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Corruption:
    tokens: torch.Tensor  # (b h w) corrupted tokens
    rate: torch.Tensor  # (b,) the per-sample threshold t
    replaced: torch.Tensor  # (b h w) bool: positions drawn afresh (a draw may equal the original)


def corrupt(tokens: torch.Tensor, vocab_size: int, *, generator: torch.Generator | None = None,
            rate: torch.Tensor | float | None = None) -> Corruption:
    """tokens (b h w) -> Corruption. `rate` fixes t (scalar or (b,)) instead of drawing it."""
    b = tokens.shape[0]
    dev = tokens.device
    if rate is None:
        t = torch.rand(b, generator=generator, device=dev)
    else:
        t = torch.as_tensor(rate, dtype=torch.float32, device=dev).expand(b).clone()
    r = torch.rand(tokens.shape, generator=generator, device=dev)
    replaced = r < t.view(b, *([1] * (tokens.ndim - 1)))
    noise = torch.randint(0, vocab_size, tokens.shape, generator=generator, device=dev)
    return Corruption(torch.where(replaced, noise, tokens), t, replaced)
