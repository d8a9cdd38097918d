"""Pixel masks -> latent masks for inpainting (section 3.6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import InputError


def latent_mask(pixel_mask: torch.Tensor, factor: int, grid: tuple[int, int],
                threshold: float = 0.0, pixel_size: tuple[int, int] | None = None) -> torch.Tensor:
    """pixel_mask (b H W) or (H W), 1 = repaint (ComfyUI's MASK) -> repaint (b h w) bool.

    A latent is *known* only if every pixel of its f x f patch is known (the paper's AND), i.e. it
    is repainted if any pixel of its patch is marked (value > threshold). A mask of another size
    than the token grid's image (such as ComfyUI's 64x64 all-zero mask for images without alpha)
    is resized to it first, except a mask of `pixel_size`, the size the image had before VQ Encode
    padded it (sundae_core/pixel_size.py): that one is padded the same way, with known pixels.
    """
    if pixel_mask.ndim == 2:
        pixel_mask = pixel_mask[None]
    if pixel_mask.ndim != 3:
        raise InputError(f"mask must be shaped (b H W) or (H W), got {tuple(pixel_mask.shape)}")
    h, w = grid
    size = (h * factor, w * factor)
    m = rearrange(pixel_mask.float() > threshold, "b H W -> b 1 H W").float()
    if pixel_size is not None and tuple(m.shape[-2:]) == tuple(pixel_size) and all(
            s <= full < s + factor for s, full in zip(pixel_size, size)):
        m = F.pad(m, (0, size[1] - pixel_size[1], 0, size[0] - pixel_size[0]))
    if tuple(m.shape[-2:]) != size:
        # "area" (not nearest) so that shrinking a larger mask never drops a marked pixel: any
        # mark inside an output pixel's footprint keeps it marked (> 0), as the AND requires.
        m = F.interpolate(m, size=size, mode="area")
    return rearrange(F.max_pool2d(m, factor) > 0, "b 1 h w -> b h w")
