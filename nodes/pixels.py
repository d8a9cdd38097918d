"""Nodes between tokens and pixels: decode, composite onto the original, outpaint canvas."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from sundae_core.graph.image_files import image_to_pil
from sundae_core.images import composite, model_to_comfy, outpaint_canvas
from sundae_core.limits import pixel_problem

from .node_inputs import CATEGORY, TOKENS, VQGAN_INPUT, model_device, socket


def decode(vqgan, tokens: torch.Tensor) -> torch.Tensor:
    """tokens (b h w) -> IMAGE (b H W c) float32 on CPU."""
    return model_to_comfy(vqgan.decode(tokens.to(model_device(vqgan))))


def preview_decoder(vqgan) -> Callable[[torch.Tensor], Image.Image]:
    """For progress previews: the first sample of a token batch, decoded."""
    return lambda tokens: image_to_pil(decode(vqgan, tokens[:1])[0])


class SundaeVQDecode:
    DESCRIPTION = "Decode VQ-GAN tokens into images (f x f pixels per token)."
    CATEGORY = f"{CATEGORY}/image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vqgan": VQGAN_INPUT, "tokens": socket(TOKENS, "The tokens to decode.")}}

    def decode(self, vqgan, tokens):
        return (decode(vqgan, tokens),)


class SundaeComposite:
    DESCRIPTION = ("Paste generated pixels into the original inside the mask only, with a soft edge: "
                   "pixels outside the mask stay exactly as they were (the VQ-GAN round trip is lossy).")
    CATEGORY = f"{CATEGORY}/image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The original with the masked area replaced.",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "original": ("IMAGE", {"tooltip": "The image that was inpainted or outpainted."}),
            "generated": ("IMAGE", {"tooltip": "The decoded result (resized to the original if needed)."}),
            "mask": ("MASK", {"tooltip": "1 = take the generated pixels (the same mask used for inpainting)."}),
            "feather": ("INT", {"default": 8, "min": 0, "max": 256, "step": 1, "tooltip": (
                "Width in pixels of the blend ramp just inside the mask edge; 0 = hard edge.")}),
        }}

    def composite(self, original, generated, mask, feather):
        return (composite(original, generated, mask, feather),)


class SundaeOutpaintCanvas:
    DESCRIPTION = ("Grow an image by margins (rounded up to the VQ-GAN factor, so the original stays on "
                   "the token grid) and mask the new border for SUNDAE to fill.")
    CATEGORY = f"{CATEGORY}/image"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The grown canvas (border filled with `fill`).", "1 on the new border (plus any input mask).")
    FUNCTION = "grow"

    @classmethod
    def INPUT_TYPES(cls):
        margin = {"default": 0, "min": 0, "max": 4096, "step": 16}
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image to extend; its size must be a multiple of the VQ-GAN factor."}),
            "vqgan": VQGAN_INPUT,
            "left": ("INT", {**margin, "tooltip": "Pixels to add on the left."}),
            "top": ("INT", {**margin, "tooltip": "Pixels to add at the top."}),
            "right": ("INT", {**margin, "tooltip": "Pixels to add on the right."}),
            "bottom": ("INT", {**margin, "tooltip": "Pixels to add at the bottom."}),
            "fill": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Grey level of the new border before it is repainted (1 = white)."}),
        }, "optional": {"mask": ("MASK", {"tooltip": "Optional: also repaint this area of the original."})}}

    @classmethod
    def VALIDATE_VALUES(cls, left, top, right, bottom):
        """The margins alone give a lower bound of the canvas, whatever the image."""
        return pixel_problem(left + right + 1, top + bottom + 1, 1, "outpaint canvas") or True

    def grow(self, image, vqgan, left, top, right, bottom, fill, mask=None):
        canvas = outpaint_canvas(image, left, top, right, bottom, vqgan.factor, mask=mask, fill=fill)
        return (canvas.image, canvas.mask)
