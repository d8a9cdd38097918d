"""Image grids and atomic PNG writing for CLIs, READMEs and logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from .checkpoint import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(b c h w) in [-1, 1] -> (b h w c) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "b c h w -> b h w c").cpu().numpy()


def thumbnails(images: torch.Tensor, size: int) -> torch.Tensor:
    """(b c h w) -> (b c size size), antialiased, for grids that stay readable and small."""
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def make_grid(images: torch.Tensor, nrow: int, pad: int = 2) -> Image.Image:
    """(b c h w) in [-1, 1] -> one PIL image, `nrow` images per row, white gutters."""
    arr = to_uint8(images)
    b, h, w, c = arr.shape
    rows = -(-b // nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = arr[i]
    return Image.fromarray(canvas)


def save_png(image: Image.Image, path: str | Path, **pnginfo) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", **pnginfo))
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    return save_png(make_grid(images, nrow), path)
