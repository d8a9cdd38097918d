"""The prior's one-step token completion: fill chosen positions with random tokens and count how
often its top-1 prediction brings the true token back. Shared by `sundae-eval-default` (hole and
scattered positions on held-out images) and the prior trainer's validation (`val_hole_top1`)."""

from __future__ import annotations

import torch

from sundae_core.corruption import corrupt


def completion_accuracy(logits_fn, tokens: torch.Tensor, positions: torch.Tensor, vocab_size: int,
                        generator: torch.Generator, draws: int = 1) -> torch.Tensor:
    """Replace `positions` (b h w) of tokens (b h w) by random tokens; the share of those positions
    where the prior's top-1 prediction is the true token, per sample (b,), averaged over `draws`
    independent fillings (one draw moves a 64-token figure by about 0.01)."""
    hits = torch.zeros(tokens.shape[0], device=tokens.device)
    for _ in range(draws):
        noise = corrupt(tokens, vocab_size, generator=generator, rate=1.0).tokens
        predicted = logits_fn(torch.where(positions, noise, tokens), None).argmax(-1)
        hits += ((predicted == tokens) & positions).sum((1, 2)).float()
    return hits / (draws * positions.sum((1, 2)).float())
