"""Nodes between tokens and pixels: decode, composite onto the original, outpaint canvas."""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

import torch
from PIL import Image

from sundae_core.graph.image_files import image_to_pil
from sundae_core.images import composite, model_to_comfy, outpaint_canvas
from sundae_core.limits import pixel_problem
from sundae_core.pixel_size import crop_to_pixel_size, pixel_size
from sundae_core.seams import DEFAULT_BAND as SEAM_BAND
from sundae_core.token_version import check_tokens

from .model_files import default_vqgan_factor
from .node_inputs import CATEGORY, TOKENS, VQGAN_INPUT, model_device, socket

# Seconds one sample took to decode, per VQ-GAN and token grid (h, w), measured by every decode
# here (previews and VQ Decode): a sampling run budgets its first preview with it (comfy_bridge.
# Progress) instead of guessing from a sampling step. Weak keys: an unloaded model is forgotten.
_DECODE_SECONDS: WeakKeyDictionary = WeakKeyDictionary()


def decode(vqgan, tokens: torch.Tensor) -> torch.Tensor:
    """tokens (b h w) -> IMAGE (b H W c) float32 on CPU; the time it took is remembered."""
    started = time.perf_counter()
    image = model_to_comfy(vqgan.decode(tokens.to(model_device(vqgan))))  # on the CPU: synchronised
    per_sample = (time.perf_counter() - started) / max(tokens.shape[0], 1)
    try:
        _DECODE_SECONDS.setdefault(vqgan, {})[tuple(tokens.shape[-2:])] = per_sample
    except TypeError:  # a stand-in model that cannot be weakly referenced: nothing remembered
        pass
    return image


class PreviewDecoder:
    """For progress previews: the first sample of a token batch, decoded; `expected_seconds` is
    what the last decode of that grid size by this VQ-GAN took (None before any)."""

    def __init__(self, vqgan):
        self.vqgan = vqgan

    def __call__(self, tokens: torch.Tensor) -> Image.Image:
        return image_to_pil(decode(self.vqgan, tokens[:1])[0])

    def expected_seconds(self, tokens: torch.Tensor) -> float | None:
        try:
            return _DECODE_SECONDS.get(self.vqgan, {}).get(tuple(tokens.shape[-2:]))
        except TypeError:
            return None


def preview_decoder(vqgan) -> PreviewDecoder:
    return PreviewDecoder(vqgan)


class SundaeVQDecode:
    DESCRIPTION = ("Decode VQ-GAN tokens into images (f x f pixels per token), cropped to the size of the "
                   "image VQ Encode padded (or the size Random Tokens was given).")
    CATEGORY = f"{CATEGORY}/image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vqgan": VQGAN_INPUT, "tokens": socket(TOKENS, "The tokens to decode.")}}

    def decode(self, vqgan, tokens):
        check_tokens(tokens, vqgan.token_version, "this VQ-GAN")
        return (crop_to_pixel_size(decode(vqgan, tokens), pixel_size(tokens)),)


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
                "Width in pixels of the blend ramp just inside the mask edge; 0 = hard edge. A stroke "
                "thinner than the ramp still takes the generated pixels at its middle.")}),
            "seam_band": ("INT", {"default": SEAM_BAND, "min": 0, "max": 256, "step": 1, "tooltip": (
                "Match the pasted area to its surroundings: the VQ-GAN round trip shifts colours a "
                "little, so its error is measured on this many pixels around the mask and taken out "
                "of the generated pixels (smoothly; detail is kept). 0 = paste as decoded.")}),
        }}

    def composite(self, original, generated, mask, feather, seam_band=SEAM_BAND):
        return (composite(original, generated, mask, feather, seam_band),)


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
        f = default_vqgan_factor()  # margins step in multiples of the default VQ-GAN's factor (32)
        margin = {"default": 0, "min": 0, "max": 4096 // f * f, "step": f}
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image to extend (any size)."}),
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
