"""Conversions between ComfyUI IMAGE/MASK tensors and model tensors; compositing; outpaint canvas."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import InputError
from .limits import check_pixels
from .seams import match_seams


def comfy_to_model(image: torch.Tensor) -> torch.Tensor:
    """IMAGE (b h w c) float in [0, 1] -> (b c h w) in [-1, 1] (alpha dropped)."""
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise InputError(f"IMAGE must be shaped (b h w c) with c in 1/3/4, got {tuple(image.shape)}")
    image = image[..., :3] if image.shape[-1] >= 3 else image.expand(*image.shape[:3], 3)
    return rearrange(image.float(), "b h w c -> b c h w") * 2 - 1


def model_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """(b c h w) in [-1, 1] -> IMAGE (b h w c) float32 in [0, 1] on CPU."""
    return rearrange((images.float().clamp(-1, 1) + 1) / 2, "b c h w -> b h w c").cpu()


def mask_to_batch(mask: torch.Tensor, batch: int, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """MASK (b H W) or (H W), any size -> (batch height width) float, resized (bilinear, a soft edge
    for blending; "area" where any marked pixel must mark only its own footprint)."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise InputError(f"MASK must be shaped (b h w) or (h w), got {tuple(mask.shape)}")
    if mask.shape[1:] != (height, width):
        mask = F.interpolate(mask[:, None].float(), size=(height, width), mode=mode,
                             **({"align_corners": False} if mode == "bilinear" else {}))[:, 0]
    if mask.shape[0] not in (1, batch):
        raise InputError(f"mask batch {mask.shape[0]} does not match image batch {batch}")
    return mask.float().expand(batch, height, width)


HIDE_FILLS = ("mean", "smooth")


def hide_masked(pixels: torch.Tensor, mask: torch.Tensor, ring: int, fill: str = "mean") -> torch.Tensor:
    """(b c h w) pixels with the masked ones (mask (b h w) > 0: to be replaced) painted over: with
    `fill` "mean", in the mean colour of the unmasked pixels within `ring` pixels of them, one colour
    per image (mid grey where nothing is unmasked); with "smooth", in a smooth extension of all the
    unmasked pixels (`pull_push_fill`; `ring` unused).

    What inpainting encodes: the VQ-GAN encoder reads about 330 px around each token, so tokens kept
    beside a hole would otherwise carry what the hole held (the object a user is removing) into the
    prior's context. With the hole hidden, 8 x 8-token holes of held-out emoji complete at a lower
    one-step top-1 (the honest figure: session 34, docs/campaign/history.md)."""
    if fill not in HIDE_FILLS:
        raise InputError(f"hide fill must be one of {', '.join(HIDE_FILLS)}, got {fill!r}")
    hidden = mask > 0
    if fill == "smooth":
        return pull_push_fill(pixels, hidden)
    near = F.max_pool2d(hidden[:, None].float(), 2 * ring + 1, stride=1, padding=ring)[:, 0] > 0
    around = (near & ~hidden)[:, None]
    count = around.sum((2, 3))
    # summed in float64: a flat colour comes back exactly (the evaluations' mean-colour baseline)
    colour = torch.where(around, pixels.double(), 0.0).sum((2, 3)) / count.clamp_min(1)  # (b c); 0 = mid grey
    return torch.where(hidden[:, None], colour.to(pixels.dtype)[:, :, None, None], pixels)


def pull_push_fill(pixels: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """(b c h w) pixels with the hidden ones (hidden (b h w) bool) replaced by a smooth extension of
    the others: the known pixels averaged down a pyramid of halvings ("pull"), then each level's
    gaps filled from the bilinear upsampling of the level below ("push"), a cell blending its own
    average and the coarser one by the share of it that is known. A hole's middle takes the colours
    around it, blurred over its size; mid grey (0) where nothing is known. Weighted averages only, so
    nothing of the hidden pixels reaches the result."""
    weight = (~hidden)[:, None].to(pixels.dtype)
    # zeros, not pixels x 0: an inf or NaN under the hole would otherwise spread through the fill
    levels = [(torch.where(hidden[:, None], 0.0, pixels), weight)]
    while max(levels[-1][0].shape[-2:]) > 1:  # down to one cell, so a wide image's ends meet too
        total, known = levels[-1]
        # means of 2 x 2 cells (a last odd row or column on its own; 1 x 2 once a side is down to
        # one): their ratio is the known mean
        cell = tuple(min(2, side) for side in total.shape[-2:])
        levels.append((F.avg_pool2d(total, cell, ceil_mode=True), F.avg_pool2d(known, cell, ceil_mode=True)))
    total, known = levels[-1]
    colour = total / known.clamp_min(1e-8)
    for total, known in reversed(levels[:-1]):
        coarse = F.interpolate(colour, size=total.shape[-2:], mode="bilinear", align_corners=False)
        colour = total + coarse * (1 - known)  # total = known share x the known pixels' mean
    return torch.where(hidden[:, None], colour, pixels)


def feathered(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """Soften a (b h w) 0..1 mask *inward*: zero stays exactly zero, so pixels outside the mask
    keep their original values; the blend ramps up over about `feather` pixels inside it. A part
    of the mask too thin for the ramp (a brush stroke narrower than about 2 x feather) still
    reaches the full blend at its middle, instead of keeping the original there."""
    if feather <= 0:
        return mask.clamp(0, 1)
    soft = 1 - mask.clamp(0, 1)[:, None]
    k = 2 * feather + 1
    soft = F.avg_pool2d(F.pad(soft, (feather,) * 4, mode="replicate"), k, stride=1)  # box blur of known
    inside = 1 - soft.clamp(0, 1)
    # the share of the mask around a pixel, over the most it reaches within the ramp's reach: 1 at
    # a stroke's middle however thin, and unchanged wherever the mask is wider than the ramp
    # (some pixel within `feather` lies a whole window deep, where the share is 1)
    peak = F.max_pool2d(inside, k, stride=1, padding=feather)
    inside = torch.where(peak > 0, inside / peak.clamp_min(1e-6), inside)[:, 0]
    # inside is ~0.5 at the mask edge; rescale so the ramp goes 0 -> 1 within the mask
    return torch.where(mask > 0, ((inside - 0.5) * 2).clamp(0, 1) * mask.clamp(0, 1), torch.zeros_like(mask))


def composite(original: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor, feather: int = 8,
              seam_band: int = 0) -> torch.Tensor:
    """IMAGE (b h w c) x2 + MASK -> original outside the mask, generated inside, feathered edge.
    seam_band > 0: first take the decoder's colour error, measured on that many pixels around the
    mask, out of the generated pixels (sundae_core/seams.py), so the pasted area's edge does not show."""
    if original.shape[1:3] != generated.shape[1:3]:
        generated = rearrange(F.interpolate(rearrange(generated, "b h w c -> b c h w"),
                                            size=original.shape[1:3], mode="bilinear", align_corners=False),
                              "b c h w -> b h w c")
    b = max(original.shape[0], generated.shape[0])
    mask = mask_to_batch(mask, b, *original.shape[1:3])
    if seam_band > 0:
        to_chw = lambda image: rearrange(image[..., :3].float(), "b h w c -> b c h w")
        generated = rearrange(match_seams(to_chw(original), to_chw(generated), mask, seam_band).clamp(0, 1),
                              "b c h w -> b h w c")
    m = feathered(mask, feather)[..., None]
    return original[..., :3] * (1 - m) + generated[..., :3] * m


@dataclass
class Canvas:
    image: torch.Tensor  # (b H W c) the grown canvas
    mask: torch.Tensor  # (b H W) 1 = new area to fill (plus any mask given)


def outpaint_canvas(image: torch.Tensor, left: int, top: int, right: int, bottom: int, factor: int,
                    mask: torch.Tensor | None = None, fill: float = 1.0) -> Canvas:
    """Grow the canvas by the given margins (each rounded up to a multiple of `factor` so the
    original stays aligned to the token grid), fill the border and mark it for repainting. An image
    that is not a multiple of `factor` makes a canvas that is not either: VQ Encode pads it."""
    if min(left, top, right, bottom) < 0:
        raise InputError("outpaint margins must be >= 0")
    up = lambda n: -(-n // factor) * factor
    left, top, right, bottom = up(left), up(top), up(right), up(bottom)
    b, h, w, c = image.shape
    check_pixels(w + left + right, h + top + bottom, b, "outpaint canvas")
    canvas = torch.full((b, h + top + bottom, w + left + right, c), fill, dtype=image.dtype)
    canvas[:, top:top + h, left:left + w] = image
    new = torch.ones(b, h + top + bottom, w + left + right)
    new[:, top:top + h, left:left + w] = 0 if mask is None else mask_to_batch(mask, b, h, w)
    return Canvas(canvas, new)
