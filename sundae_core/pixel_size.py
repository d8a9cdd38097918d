"""Images of any size through a VQ-GAN that takes multiples of its factor: pad, then crop back.

VQ Encode pads an image on the right and bottom (edge pixels repeated) up to a multiple of the
VQ-GAN factor f, and the tokens remember the size the image had, as they remember their token
version (`token_version.tag`): an attribute on the tensor. VQ Decode crops the padding off again
and Latent Mask pads a mask of the image's size the same way instead of stretching it, so a
1000 x 750 photo goes through the inpainting workflow and comes out 1000 x 750, pixel for pixel
where the mask is 0. Operations that return a new tensor drop the attribute; the nodes that make
tokens from tokens pass it on (`carry`). Tokens without it decode at the full grid size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ATTR = "_sundae_pixel_size"


def pad_to_multiple(images: torch.Tensor, factor: int) -> torch.Tensor:
    """images: (b c h w) -> (b c H W) with H, W the multiples of `factor` at or above h, w; the new
    rows and columns repeat the last ones (a flat border the VQ-GAN encodes without new edges)."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % factor, -w % factor
    if not pad_h and not pad_w:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")


def set_pixel_size(tokens: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """`tokens` marked with the (height, width) in pixels of the image they encode; None = the
    whole grid. Returns `tokens`."""
    setattr(tokens, _ATTR, None if size is None else (int(size[0]), int(size[1])))
    return tokens


def pixel_size(tokens: torch.Tensor) -> tuple[int, int] | None:
    """The (height, width) `set_pixel_size` put on `tokens`, or None."""
    return getattr(tokens, _ATTR, None)


def carry(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """`new` (tokens made from `old`, same grid) marked with `old`'s pixel size; returns `new`."""
    if pixel_size(old) is not None and new.shape[-2:] == old.shape[-2:]:
        set_pixel_size(new, pixel_size(old))
    return new


def crop_to_pixel_size(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """IMAGE (b H W c) cut to (b h w c) from the top left; unchanged when size is None or larger."""
    if size is None:
        return images
    return images[:, :size[0], :size[1]]
