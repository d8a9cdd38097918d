"""SUNDAE's training corruption (section 3.3), and block corruption for inpainting.

Scattered (the paper's): per sample t ~ U[0,1], per position R ~ U[0,1]; where R < t the token is
replaced by a uniformly random token. It almost never shows the model what an inpainting hole
looks like, a contiguous region all redrawn in an otherwise clean grid, so completing one is
left to chance.

Block (an option, off by default, issue 12): with probability `block_share` a sample is a *block
sample*. Its block, the union of 1..`max_shapes` rectangles and brush strokes drawn by
`block_mask`, is redrawn entirely, and the rest of the sample gets scattered corruption at
t ~ U[0, CONTEXT_RATE] (CONTEXT_RATE = 0.5). The low context rate is the rule chosen here: at
inpainting time the context is known and kept, so block samples should mostly look like that,
while the remaining noise keeps the model denoising its context (step 2 of the unrolled loss sees
the model's own samples everywhere). Other samples get the paper's corruption, drawn exactly as
without the option, so `block_share=0` reproduces it token for token for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigError, InputError

# Block samples: scattered corruption outside the block at t ~ U[0, CONTEXT_RATE] (see above).
CONTEXT_RATE = 0.5


@dataclass
class Corruption:
    tokens: torch.Tensor  # (b h w) corrupted tokens
    rate: torch.Tensor  # (b,) the per-sample threshold t (block samples: the rate outside the block)
    replaced: torch.Tensor  # (b h w) bool: positions drawn afresh (a draw may equal the original)
    block: torch.Tensor | None = None  # (b h w) bool: block regions (all in replaced); None without blocks


@dataclass(frozen=True)
class BlockShapes:
    """The regions `block_mask` draws. Sizes are shares of the grid side (h for rows, w for columns).

    A rectangle's sides are uniform in [min_side, max_side]; a brush stroke is a random walk of
    square stamps `brush_min`..`brush` wide (in tokens, `brush` a share of the shorter side) whose
    path length is uniform in [min_side, max_side] of the shorter side, as in the free-form masks
    of the inpainting literature.
    """

    min_side: float = 0.125
    max_side: float = 0.75
    max_shapes: int = 2  # each block sample gets 1..max_shapes shapes; the block is their union
    stroke_share: float = 0.5  # share of shapes that are brush strokes rather than rectangles
    brush: float = 0.25  # widest brush stamp, as a share of the shorter side (never under 2 tokens)

    def __post_init__(self) -> None:
        if not 0 < self.min_side <= self.max_side <= 1:
            raise ConfigError(f"block_shapes: need 0 < min_side <= max_side <= 1, got min_side "
                              f"{self.min_side} and max_side {self.max_side}")
        if self.max_shapes < 1:
            raise ConfigError(f"block_shapes.max_shapes must be >= 1, got {self.max_shapes}")
        if not 0 <= self.stroke_share <= 1:
            raise ConfigError(f"block_shapes.stroke_share must lie in [0, 1], got {self.stroke_share}")
        if not 0 < self.brush <= 1:
            raise ConfigError(f"block_shapes.brush must lie in (0, 1], got {self.brush}")


def corrupt(tokens: torch.Tensor, vocab_size: int, *, generator: torch.Generator | None = None,
            rate: torch.Tensor | float | None = None, block_share: float = 0.0,
            block_shapes: BlockShapes = BlockShapes()) -> Corruption:
    """tokens (b h w) -> Corruption. `rate` fixes t (scalar or (b,)) instead of drawing it; with
    blocks it is also the rate outside the block. `block_share`: probability that a sample is a
    block sample (module docstring); 0 gives the paper's corruption exactly."""
    if not 0 <= block_share <= 1:
        raise ValueError(f"block_share must lie in [0, 1], got {block_share}")
    if block_share > 0 and tokens.ndim != 3:
        raise InputError(f"block corruption needs tokens shaped (b h w), got {tuple(tokens.shape)}")
    b = tokens.shape[0]
    dev = tokens.device
    if rate is None:
        t = torch.rand(b, generator=generator, device=dev)
    else:
        t = torch.as_tensor(rate, dtype=torch.float32, device=dev).expand(b).clone()
    r = torch.rand(tokens.shape, generator=generator, device=dev)
    noise = torch.randint(0, vocab_size, tokens.shape, generator=generator, device=dev)
    block = None
    if block_share > 0:
        # Drawn after the scattered draws, so those stay what they are without blocks.
        chosen = torch.rand(b, generator=generator, device=dev) < block_share  # (b,)
        block = block_mask(tuple(tokens.shape), generator=generator, device=dev, shapes=block_shapes)
        block &= chosen[:, None, None]
        if rate is None:  # t ~ U[0, 1] becomes t ~ U[0, CONTEXT_RATE] without another draw
            t = torch.where(chosen, t * CONTEXT_RATE, t)
    replaced = r < t.view(b, *([1] * (tokens.ndim - 1)))
    if block is not None:
        replaced |= block
    return Corruption(torch.where(replaced, noise, tokens), t, replaced, block)


def block_mask(shape: tuple[int, int, int], *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, shapes: BlockShapes = BlockShapes()) -> torch.Tensor:
    """shape (b, h, w) -> block (b h w) bool: per sample the union of 1..max_shapes shapes, each a
    rectangle or a brush stroke (with probability stroke_share). Every shape is 4-connected and
    inside the grid; several shapes may or may not touch."""
    b, h, w = shape
    k = shapes.max_shapes
    draw = _Uniform(generator, torch.device(device) if device is not None else torch.device("cpu"))
    count = _randint(1, k, draw(b))  # (b,) shapes per sample
    used = torch.arange(k, device=draw.device)[None, :] < count[:, None]  # (b k)
    stroke = draw(b, k) < shapes.stroke_share  # (b k)
    rects = _rectangles(b, k, h, w, draw, shapes)  # (b k h w)
    strokes = _strokes(b, k, h, w, draw, shapes)  # (b k h w)
    chosen = torch.where(stroke[:, :, None, None], strokes, rects) & used[:, :, None, None]
    return chosen.any(dim=1)


@dataclass(frozen=True)
class _Uniform:
    """U[0, 1) draws of a given size from one generator, on one device."""

    generator: torch.Generator | None
    device: torch.device

    def __call__(self, *size: int) -> torch.Tensor:
        return torch.rand(size, generator=self.generator, device=self.device)


def _side_range(side: int, shapes: BlockShapes) -> tuple[int, int]:
    """Smallest and largest extent in tokens (at least 1) for a grid side."""
    lo = max(1, round(shapes.min_side * side))
    return lo, max(lo, round(shapes.max_side * side))


def _randint(lo: int | torch.Tensor, hi: int | torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Integers uniform in [lo, hi] from uniforms u in [0, 1) (lo, hi may be tensors shaped like u)."""
    return (lo + (u * (hi - lo + 1)).floor()).long()


def _box(top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
         h: int, w: int) -> torch.Tensor:
    """Boxes [top, top+height) x [left, left+width), clipped to the grid: (...) -> (... h w) bool."""
    rows, cols = torch.arange(h, device=top.device), torch.arange(w, device=top.device)
    inside_r = (rows >= top[..., None]) & (rows < (top + height)[..., None])  # (... h)
    inside_c = (cols >= left[..., None]) & (cols < (left + width)[..., None])  # (... w)
    return inside_r[..., :, None] & inside_c[..., None, :]


def _rectangles(b: int, k: int, h: int, w: int, draw: _Uniform, shapes: BlockShapes) -> torch.Tensor:
    """(b k h w) bool: one axis-aligned rectangle per (sample, shape), wholly inside the grid."""
    height = _randint(*_side_range(h, shapes), draw(b, k))
    width = _randint(*_side_range(w, shapes), draw(b, k))
    top = _randint(0, h - height, draw(b, k))
    left = _randint(0, w - width, draw(b, k))
    return _box(top, left, height, width, h, w)


def _strokes(b: int, k: int, h: int, w: int, draw: _Uniform, shapes: BlockShapes) -> torch.Tensor:
    """(b k h w) bool: a brush stroke per (sample, shape), a walk of square stamps of side s.

    The walk turns by at most 60 degrees a step (a stroke, not a blob) and its centre moves at most
    s - 1 tokens along each axis, so consecutive stamps overlap and the stroke is 4-connected.
    Centres are clamped into the grid: a clipped stamp still holds its centre, which keeps the
    overlap.
    """
    short = min(h, w)
    widest = min(short, max(2, round(shapes.brush * short)))
    # A 1-token stamp could only connect by moving along one axis at a time; 2 is the floor.
    side = _randint(min(2, widest), widest, draw(b, k))  # (b k) stamp side s
    reach = (side - 1).float()  # (b k) step length
    length = _randint(*_side_range(short, shapes), draw(b, k)).float()  # (b k) path length in tokens
    steps = torch.where(reach > 0, torch.ceil(length / reach.clamp(min=1)), torch.zeros_like(length))
    y = (draw(b, k) * h - 0.5).clamp(0, h - 1)  # (b k) continuous centre
    x = (draw(b, k) * w - 0.5).clamp(0, w - 1)
    angle = draw(b, k) * 2 * math.pi
    half = (side - 1) // 2
    out = torch.zeros(b, k, h, w, dtype=torch.bool, device=draw.device)
    for i in range(int(steps.max().item()) + 1 if steps.numel() else 0):
        # floor(. + 0.5), not round(): monotone and shift-equivariant, so consecutive stamp centres
        # are never further apart than `reach`, whatever ties round() would break.
        cy, cx = torch.floor(y + 0.5).long(), torch.floor(x + 0.5).long()
        out |= _box(cy - half, cx - half, side, side, h, w) & (i <= steps)[:, :, None, None]
        angle = angle + (draw(b, k) * 2 - 1) * (math.pi / 3)
        y = (y + reach * torch.sin(angle)).clamp(0, h - 1)
        x = (x + reach * torch.cos(angle)).clamp(0, w - 1)
    return out
