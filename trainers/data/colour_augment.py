"""Colour augmentation for VQ-GAN training: every hue, and saturated flat colours, seen equally.

The emoji art is mostly red, orange and yellow (faces, hands, food). An encoder trained on it
alone never needed green or blue codes: the shipped 800-step model decoded pure green as dark
teal and pure blue as slate, and 3 of its 1000 codes decoded green-dominant. Two cheap levers:

- `recolour`: an emoji with its channels permuted, or its hue rotated about the grey axis, is
  still a plausible picture, so the encoder sees every hue as often as red. Greys (and so the
  white background and black outlines) are unchanged by both.
- `synthetic_canvases`: flat canvases and two-colour ones (a disc, a rectangle or a half-plane
  of one colour on another), 40 % of their colours the cube's corners (pure red, green, blue,
  cyan, magenta, yellow, black, white), the colours a user notices first when they come back
  wrong, and 20 % greys.

Images are (b 3 h w) in [-1, 1] throughout; randomness only through the given generator.
"""

from __future__ import annotations

import itertools
import math

import torch
from einops import rearrange, repeat

PERMUTATIONS = torch.tensor(list(itertools.permutations(range(3))))  # (6 3)
CORNERS = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))  # (8 3) in [0, 1]
GREY_AXIS = torch.full((3,), 1 / math.sqrt(3))


def hue_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (b 3 3) about the grey axis (1, 1, 1) by `angles` (b) radians (Rodrigues)."""
    u = GREY_AXIS
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    cos, sin = angles.cos()[:, None, None], angles.sin()[:, None, None]
    return cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(u, u)


def recolour(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Each image, with `probability`, gets a random channel permutation and then a hue rotation
    by a uniform angle. Rotations other than multiples of 120 degrees move some saturated colours
    out of the RGB cube; they are clipped back, so the result stays a valid image."""
    b = images.shape[0]
    chosen = torch.rand(b, generator=generator) < probability
    perms = PERMUTATIONS[torch.randint(0, len(PERMUTATIONS), (b,), generator=generator)]  # (b 3)
    angles = torch.rand(b, generator=generator) * 2 * math.pi
    if not bool(chosen.any()):
        return images
    rgb = (images + 1) / 2
    permuted = torch.gather(rgb, 1, repeat(perms, "b c -> b c h w", h=rgb.shape[2], w=rgb.shape[3]))
    rotated = torch.einsum("bij,bjhw->bihw", hue_rotation(angles), permuted).clamp(0, 1)
    out = rotated * 2 - 1
    return torch.where(chosen[:, None, None, None], out, images)


CORNER_SHARE, GREY_SHARE = 0.4, 0.2  # of the synthetic colours; the rest uniform over the cube


def random_colours(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n 3) in [0, 1]: 40 % the cube's corner colours, 20 % greys (uniform along the grey axis),
    40 % uniform over the cube. Greys since session 28: the decoders trained without them (half
    corners, half uniform, which lands near the grey axis too rarely) tinted flat greys 5-17 of 255
    (mid grey khaki, light grey violet), and greys are what photos and UI art are full of."""
    corners = CORNERS[torch.randint(0, len(CORNERS), (n,), generator=generator)]
    greys = torch.rand(n, 1, generator=generator).expand(n, 3)
    uniform = torch.rand(n, 3, generator=generator)
    kind = torch.rand(n, 1, generator=generator)
    return torch.where(kind < CORNER_SHARE, corners, torch.where(kind < CORNER_SHARE + GREY_SHARE, greys, uniform))


def synthetic_canvases(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n 3 size size) in [-1, 1]: a quarter flat, the rest a disc, a rectangle or a half-plane
    of a second colour on the first."""
    background, foreground = random_colours(n, generator), random_colours(n, generator)
    kind = torch.randint(0, 4, (n,), generator=generator)  # 0 flat, 1 disc, 2 rectangle, 3 half-plane
    centre = torch.rand(n, 2, generator=generator)  # (n yx) in [0, 1] of the canvas
    extent = 0.15 + 0.35 * torch.rand(n, 2, generator=generator)  # radius / half-sides
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    coords = (torch.arange(size) + 0.5) / size
    y, x = coords[None, :, None], coords[None, None, :]  # (1 h 1), (1 1 w)
    cy, cx = centre[:, 0, None, None], centre[:, 1, None, None]
    ey, ex = extent[:, 0, None, None], extent[:, 1, None, None]
    disc = (y - cy) ** 2 + (x - cx) ** 2 < ey ** 2
    rectangle = ((y - cy).abs() < ey) & ((x - cx).abs() < ex)
    half_plane = (y - cy) * angle.cos()[:, None, None] + (x - cx) * angle.sin()[:, None, None] > 0
    inside = torch.stack([torch.zeros_like(disc), disc, rectangle, half_plane])  # (4 n h w)
    inside = inside[kind, torch.arange(n)]  # (n h w)
    rgb = torch.where(inside[:, None], rearrange(foreground, "n c -> n c 1 1"),
                      rearrange(background, "n c -> n c 1 1"))
    return rgb * 2 - 1
