"""Shifted views: the prior reads a few copies of the token grid moved by one position, and the
sampler averages their predictions.

The prior is not translation-invariant: its hourglass merges 2 x 2 patches, so a token's
neighbours are pooled with it or apart depending on where the grid starts, and a grid moved by one
position is a different question with the same answer. The default prior trained on grids moved
by up to one position each way (`train.shift`, token_shift.py), so those views are in its training
distribution; averaging their log-probabilities (a product of the views' predictions) is
test-time augmentation. Measured on the default prior (docs/campaign/history.md, session 21):
one-step top-1 on the 172 held-out 8 x 8 holes 0.384 alone, 0.398 with 4 views, 0.398 with 9;
views moved by two or three positions, which it never trained on, scored 0.388.

`views = n` takes the first n of VIEW_SHIFTS: 4 gives every 2 x 2 patch alignment, 9 every shift
of the trained range. Each view costs a network pass, so a step takes about n times as long.
"""

from __future__ import annotations

from typing import Callable

import torch

from .logits_at import logits_at
from .token_shift import shift_tokens

# (dy, dx), a positive dy moving the content down: the unshifted grid, then the three other 2 x 2
# patch alignments, then the rest of the one-position neighbourhood
VIEW_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1), (0, -1), (-1, 0), (-1, -1),
                                            (1, -1), (-1, 1))
# grid tokens the inner prior sees per call: views are stacked into one batch up to this many
# (nine 32 x 32 grids at batch 1), so a large batch runs its views one at a time
VIEW_BATCH_TOKENS = 16384


class ShiftedViews:
    """A LogitsFn averaging another's log-probabilities over shifted copies of the grid.

    Uncovered rows and columns repeat the grid's edge (token_shift.py), and a position pushed off
    the grid by a view is averaged over the views that still hold it (the unshifted one always
    does). Returns float32 log-probabilities, which the sampler takes as logits. Like PriorLogits
    it has `at`, so the vocabulary head runs only where a step draws.
    """

    def __init__(self, logits_fn: Callable, views: int):
        if not 1 <= views <= len(VIEW_SHIFTS):
            raise ValueError(f"views must be 1 to {len(VIEW_SHIFTS)}, got {views}")
        self.inner = logits_fn
        self.shifts = VIEW_SHIFTS[:views]

    def __call__(self, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """log-probabilities (b h w v)."""
        b, h, w = tokens.shape
        flat = torch.arange(b * h * w, device=tokens.device)
        return self.at(tokens, labels, flat).reshape(b, h, w, -1)

    def at(self, tokens: torch.Tensor, labels: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        """log-probabilities (n v) at `positions`, flat indices into (b h w)."""
        b, h, w = tokens.shape
        shifts = torch.tensor(self.shifts, device=tokens.device)  # (views 2)
        row, col = (positions // w) % h, positions % w
        y, x = row + shifts[:, :1], col + shifts[:, 1:]  # (views n): where each token sits in each view
        held = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        # several views in one batch (view-major): at batch 1 the prior's matmuls are narrow, and
        # stacking views runs them far nearer the machine's peak than one view at a time
        per_call = max(1, min(len(self.shifts), VIEW_BATCH_TOKENS // tokens.numel()))
        total, count = None, held.sum(0, keepdim=True).T.float()  # (n 1); the unshifted view holds all
        for first in range(0, len(self.shifts), per_call):
            part = slice(first, first + per_call)
            views = shifts[part].shape[0]
            moved = shift_tokens(tokens.repeat(views, 1, 1), shifts[part].repeat_interleave(b, 0))
            offset = torch.arange(views, device=tokens.device)[:, None] * tokens.numel()
            where = positions + shifts[part, :1] * w + shifts[part, 1:] + offset  # (views n)
            ids = None if labels is None else labels.repeat(views)
            logp = logits_at(self.inner, moved, ids, where[held[part]]).float().log_softmax(-1)
            if total is None:
                total = torch.zeros(positions.shape[0], logp.shape[-1], device=tokens.device)
            target = torch.arange(positions.shape[0], device=tokens.device).expand(views, -1)[held[part]]
            total.index_add_(0, target, logp)
        return total / count


def with_views(logits_fn: Callable, views: int) -> Callable:
    """logits_fn itself for one view, else a ShiftedViews over it."""
    return logits_fn if views == 1 else ShiftedViews(logits_fn, views)
