"""The prior's one-step token completion: fill chosen positions with random tokens and count how
often its top-1 prediction brings the true token back. Shared by `sundae-eval-default` (hole and
scattered positions on held-out images) and the prior trainer's validation (`val_hole_top1`)."""

from __future__ import annotations

import torch

from sundae_core.corruption import corrupt


def completion_accuracy(logits_fn, tokens: torch.Tensor, positions: torch.Tensor, vocab_size: int,
                        generator: torch.Generator, draws: int = 1, context: torch.Tensor | None = None) -> torch.Tensor:
    """Replace `positions` (b h w) of tokens (b h w) by random tokens; the share of those positions
    where the prior's top-1 prediction is the true token, per sample (b,), averaged over `draws`
    independent fillings (one draw moves a 64-token figure by about 0.01). `context`: the tokens the
    prior sees at the other positions, when they are not `tokens` (a hole's surroundings encoded
    with the hole's pixels hidden, as a user's image would be: eval_default --context)."""
    context = tokens if context is None else context
    hits = torch.zeros(tokens.shape[0], device=tokens.device)
    for _ in range(draws):
        noise = corrupt(tokens, vocab_size, generator=generator, rate=1.0).tokens
        predicted = logits_fn(torch.where(positions, noise, context), None).argmax(-1)
        hits += ((predicted == tokens) & positions).sum((1, 2)).float()
    return hits / (draws * positions.sum((1, 2)).float())


def nearest_known_accuracy(tokens: torch.Tensor, positions: torch.Tensor,
                           context: torch.Tensor | None = None) -> torch.Tensor:
    """The no-model baseline beside `completion_accuracy`: each chosen position takes the token of
    the nearest position left as it was (Euclidean distance on the grid, ties to the first in raster
    order), the token-space analogue of filling a hole with the colour around it. tokens, positions
    (b h w); `context` as in completion_accuracy; returns the share of chosen positions brought
    back, per sample (b,)."""
    _, h, w = tokens.shape
    context = tokens if context is None else context
    yx = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2).float()
    shares = []
    for grid, known, chosen in zip(tokens.flatten(1).cpu(), context.flatten(1).cpu(), positions.flatten(1).cpu()):
        if chosen.all():
            raise ValueError("every position is chosen: there is no known token to copy")
        nearest = torch.cdist(yx[chosen], yx[~chosen]).argmin(1)  # index among the known positions
        shares.append((known[~chosen][nearest] == grid[chosen]).float().mean())
    return torch.stack(shares).to(tokens.device)
