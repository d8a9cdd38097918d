"""Built-in replicas of ComfyUI's core mask nodes (MASK: `(b h w)` float, 1 = the area to change).

Same ids, inputs and outputs as ComfyUI's (checked against `/object_info` in the tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import InputError
from ..limits import check_pixels, pixel_problem
from .context import current_or_default
from .core_image_nodes import check_input_image, input_path
from .image_files import image_names, load_channel

CHANNELS = ["red", "green", "blue", "alpha"]
_POSITION = {"default": 0, "min": 0, "max": 16384, "step": 1}
_EXTENT = {"default": 512, "min": 1, "max": 16384, "step": 1}


def as_masks(mask: torch.Tensor) -> torch.Tensor:
    """`(h w)` or `(b h w)` -> `(b h w)`."""
    return mask.reshape(-1, *mask.shape[-2:])


def dilate(mask: torch.Tensor, cross: bool) -> torch.Tensor:
    """One step of grey dilation of `(b h w)` with a 3x3 square or, when `cross`, a plus-shaped kernel."""
    padded = F.pad(mask[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    h, w = mask.shape[-2:]
    if not cross:
        return F.max_pool2d(padded[:, None], kernel_size=3, stride=1)[:, 0]
    shifts = [padded[:, 1:h + 1, 1:w + 1], padded[:, 0:h, 1:w + 1], padded[:, 2:h + 2, 1:w + 1],
              padded[:, 1:h + 1, 0:w], padded[:, 1:h + 1, 2:w + 2]]
    return torch.stack(shifts).amax(dim=0)


class LoadImageMask:
    """One channel of an image from the input folder as a mask (alpha inverted: transparent = 1)."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": (image_names(current_or_default().input_dir), {"image_upload": True}),
            "channel": (["alpha", "red", "green", "blue"],),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        return check_input_image(image)

    def load_image(self, image, channel):
        return (load_channel(input_path(image), channel),)


class InvertMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def invert(self, mask):
        return (1.0 - mask,)


class SolidMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "width": ("INT", _EXTENT), "height": ("INT", _EXTENT),
        }}

    @classmethod
    def VALIDATE_VALUES(cls, width, height):
        return pixel_problem(width, height, 1, "SolidMask") or True

    def solid(self, value, width, height):
        check_pixels(width, height, 1, "SolidMask")
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class MaskToImage:
    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask):
        return (rearrange(as_masks(mask), "b h w -> b h w 1").expand(-1, -1, -1, 3).clone(),)


class ImageToMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "channel": (CHANNELS,)}}

    def image_to_mask(self, image, channel):
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise InputError(f"the image has {image.shape[-1]} channels, so it has no {channel} channel; "
                             "IMAGE never carries alpha: take the MASK output of LoadImage instead")
        return (image[..., index].clone(),)


class GrowMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mask": ("MASK",),
            "expand": ("INT", {"default": 0, "min": -16384, "max": 16384, "step": 1}),
            "tapered_corners": ("BOOLEAN", {"default": True}),
        }}

    def expand_mask(self, mask, expand, tapered_corners):
        """Dilate (expand > 0) or erode (expand < 0) by |expand| pixels."""
        out, sign = as_masks(mask).float(), 1.0 if expand >= 0 else -1.0
        for _ in range(abs(expand)):
            out = sign * dilate(sign * out, cross=tapered_corners)
        return (out,)


class CropMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "x": ("INT", _POSITION), "y": ("INT", _POSITION),
                             "width": ("INT", _EXTENT), "height": ("INT", _EXTENT)}}

    def crop(self, mask, x, y, width, height):
        return (as_masks(mask)[:, y:y + height, x:x + width].clone(),)


class FeatherMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "left": ("INT", _POSITION), "top": ("INT", _POSITION),
                             "right": ("INT", _POSITION), "bottom": ("INT", _POSITION)}}

    def feather(self, mask, left, top, right, bottom):
        """Fade linearly to the edges, with ComfyUI's numbers exactly (see feather_factors).

        The four sides are applied one after another in ComfyUI's order (left, right, top, bottom),
        so every product is rounded as in ComfyUI's own loops.
        """
        out = as_masks(mask).clone()
        h, w = out.shape[-2:]
        out *= feather_factors(w, left, from_end=False).to(out)[None, None]
        out *= feather_factors(w, right, from_end=True).to(out)[None, None]
        out *= feather_factors(h, top, from_end=False).to(out)[None, :, None]
        out *= feather_factors(h, bottom, from_end=True).to(out)[None, :, None]
        return (out,)


def feather_factors(size: int, width: int, from_end: bool) -> torch.Tensor:
    """FeatherMask's factor for each of `size` rows or columns for one side, feathered `width` deep.

    From the start (left, top) the k-th line (k = 1..n, n = min(width, size)) is scaled by k / n.
    From the end (right, bottom) this mirrors ComfyUI's indexing on purpose: ComfyUI scales line
    `-k` by (k + 1) / n for k = 0..n-1, and `-0` is line 0, so the line at the opposite edge takes
    1 / n, the last line 2 / n, the one before it 3 / n, ..., and line size - n + 1 reaches 1. That
    is an off-by-one in ComfyUI itself (the last line should take 1 / n and line 0 nothing), but a
    workflow must give the same mask in both, so we keep it.
    """
    factors = torch.ones(size, dtype=torch.float64)
    n = min(width, size)
    rates = torch.arange(1, n + 1, dtype=torch.float64) / n  # (k + 1) / n, as ComfyUI's Python floats
    lines = torch.arange(n)
    if from_end:
        lines = (-lines) % size  # Python's index -k: 0 for k = 0, else size - k
    factors[lines] = rates
    return factors


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    LoadImageMask, InvertMask, SolidMask, MaskToImage, ImageToMask, GrowMask, CropMask, FeatherMask)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImageMask": "Load Image (as Mask)", "InvertMask": "InvertMask", "SolidMask": "SolidMask",
    "MaskToImage": "Convert Mask to Image", "ImageToMask": "Convert Image to Mask",
    "GrowMask": "GrowMask", "CropMask": "CropMask", "FeatherMask": "FeatherMask"}
