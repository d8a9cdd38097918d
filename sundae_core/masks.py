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
    is resized to it first. Where VQ Encode padded the image (`pixel_size`, its size before:
    sundae_core/pixel_size.py), the mask covers the image as it was: it is brought to `pixel_size`
    and padded the same way, with known pixels.
    """
    if pixel_mask.ndim == 2:
        pixel_mask = pixel_mask[None]
    if pixel_mask.ndim != 3:
        raise InputError(f"mask must be shaped (b H W) or (H W), got {tuple(pixel_mask.shape)}")
    h, w = grid
    size = (h * factor, w * factor)
    m = rearrange(pixel_mask.float() > threshold, "b H W -> b 1 H W").float()
    # "area" (not nearest) so that shrinking a larger mask never drops a marked pixel: any mark
    # inside an output pixel's footprint keeps it marked (> 0), as the AND requires.
    resized = lambda m, to: m if tuple(m.shape[-2:]) == tuple(to) else F.interpolate(m, size=to, mode="area")
    if pixel_size is not None and tuple(m.shape[-2:]) != size and all(
            s <= full < s + factor for s, full in zip(pixel_size, size)):
        # a mask of any other size covers the image as it was (as SUNDAE Composite resizes it),
        # not the padded canvas: brought to the image's size, then padded with known pixels
        m = resized(m, pixel_size)
        m = F.pad(m, (0, size[1] - pixel_size[1], 0, size[0] - pixel_size[0]))
    m = resized(m, size)
    return rearrange(F.max_pool2d(m, factor) > 0, "b 1 h w -> b h w")
