"""Logits at chosen positions of any LogitsFn: through its `at` when it has one (the vocabulary
head then runs only there: sampler.PriorLogits, shifted_views.ShiftedViews), else its full
logits indexed."""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange


def logits_at(logits_fn: Callable, tokens: torch.Tensor, labels: torch.Tensor | None,
              positions: torch.Tensor) -> torch.Tensor:
    """logits (n v) at `positions`, flat indices into tokens (b h w)."""
    at = getattr(logits_fn, "at", None)
    if at is not None:
        return at(tokens, labels, positions)
    return rearrange(logits_fn(tokens, labels), "b h w v -> (b h w) v")[positions]
