"""Token grids moved by a few positions: the prior trainer's augmentation, and the shifted views
the sampler can average (shifted_views.py).

The emoji VQ-GAN is convolutional with f = 32, so a canvas moved by 32 px moves its tokens by
one position: shifting a token grid is a nearly exact, free augmentation. The uncovered rows and
columns repeat the grid's edge row or column instead of wrapping round (torch.roll): the emoji
sit centred on a uniform background, so the edge is background, and wrapping would paste the
opposite border (sometimes part of the emoji) next to it.

Tokens are (b h w) of any integer dtype; shifts are (b 2) int, (dy, dx) per sample, a positive
dy moving the content down and a positive dx moving it right.
"""

from __future__ import annotations

import torch


def largest_shift(height: int, width: int) -> int:
    """The largest shift allowed on a (height width) grid: under half its smaller side, so every
    shifted grid keeps more than half of its content in each direction."""
    return (min(height, width) - 1) // 2


def draw_shifts(batch: int, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """(b 2) int64: (dy, dx) per sample, each uniform over [-max_shift, max_shift], independent."""
    return torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator)


def shift_tokens(tokens: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """tokens (b h w) moved by shifts (b 2) = (dy, dx): out[i, y, x] = tokens[i, y - dy, x - dx],
    with y - dy and x - dx clamped into the grid (edge replication). Same dtype and device."""
    b, h, w = tokens.shape
    shifts = shifts.to(tokens.device)
    rows = (torch.arange(h, device=tokens.device) - shifts[:, :1]).clamp(0, h - 1)  # (b h)
    cols = (torch.arange(w, device=tokens.device) - shifts[:, 1:]).clamp(0, w - 1)  # (b w)
    batch = torch.arange(b, device=tokens.device)
    # advanced indexing broadcasts (b 1 1), (b h 1), (b 1 w) to one gather of (b h w)
    return tokens[batch[:, None, None], rows[:, :, None], cols[:, None, :]]
