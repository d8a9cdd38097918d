"""Built-in replicas of ComfyUI's core image nodes, for running workflows without ComfyUI.

Same ids, inputs (names, types, options, order) and outputs as ComfyUI's, checked against
`/object_info` in the tests; behaviour follows ComfyUI's documented conventions. Inside ComfyUI
these are never used: the server's own core nodes take their place.
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from ..errors import InputError
from ..limits import check_pixels, pixel_problem
from .context import RunContext, current_or_default
from .image_files import (check_prefix, image_names, image_to_pil, inside, load_image, pil_to_image, save_images,
                          split_annotation)

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_SIZE = {"min": 0, "max": 16384, "step": 1}


def input_path(name: str):
    """Where LoadImage-style nodes find `name`: the input folder, or an annotated output/temp one."""
    context = current_or_default()
    name, folder = split_annotation(name)
    root = {"output": context.output_dir, "temp": context.temp_dir}.get(folder, context.input_dir)
    return inside(root, name, "image")


def check_input_image(image) -> bool | str:
    """VALIDATE_INPUTS of the loaders: True, or why the named image cannot be loaded."""
    try:
        found = isinstance(image, str) and input_path(image).is_file()
    except InputError as err:
        return str(err)
    return True if found else f"Invalid image file: {image} (looked in {current_or_default().input_dir})"


def limits_verdict(width: int, height: int, batch: int = 1, what: str = "image") -> bool | str:
    """A VALIDATE_VALUES answer: True, or why width x height x batch pixels are over a ceiling."""
    return pixel_problem(width, height, batch, what) or True


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut or cycle the first dimension to `batch` entries."""
    if tensor.shape[0] < batch:
        tensor = tensor.repeat(-(-batch // tensor.shape[0]), *([1] * (tensor.dim() - 1)))
    return tensor[:batch]


def center_crop_to_aspect(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop `(b h w c)` symmetrically so it has the aspect ratio width:height."""
    old_h, old_w = image.shape[1:3]
    old_aspect, new_aspect = old_w / old_h, width / height
    if old_aspect > new_aspect:
        cut = round((old_w - old_w * new_aspect / old_aspect) / 2)
        return image[:, :, cut:old_w - cut]
    if old_aspect < new_aspect:
        cut = round((old_h - old_h * old_aspect / new_aspect) / 2)
        return image[:, cut:old_h - cut]
    return image


def resize_images(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize `(b h w c)` to width x height with one of UPSCALE_METHODS."""
    check_pixels(width, height, image.shape[0], "resized image")
    if crop == "center":
        image = center_crop_to_aspect(image, width, height)
    if method == "lanczos":
        pictures = [image_to_pil(i).resize((width, height), Image.Resampling.LANCZOS) for i in image]
        return torch.cat([pil_to_image(p) for p in pictures]).to(image.dtype)
    planar = rearrange(image, "b h w c -> b c h w")
    resized = F.interpolate(planar, size=(height, width), mode=method)
    return rearrange(resized, "b c h w -> b h w c")


def paste(destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Blend `source` over `destination` (both `(b h w c)`) with its top-left corner at (x, y)."""
    out = destination.clone()
    source = repeat_to_batch(source, out.shape[0]).to(out)
    sh, sw = source.shape[1:3]
    if mask is None:
        weight = torch.ones(out.shape[0], sh, sw, 1, dtype=out.dtype)
    else:
        planar = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).to(out), size=(sh, sw), mode="bilinear")
        weight = repeat_to_batch(rearrange(planar, "b 1 h w -> b h w 1"), out.shape[0])
    h, w = min(sh, out.shape[1] - y), min(sw, out.shape[2] - x)
    if h <= 0 or w <= 0:
        return out
    weight, region = weight[:, :h, :w], out[:, y:y + h, x:x + w]
    out[:, y:y + h, x:x + w] = weight * source[:, :h, :w, :out.shape[3]] + (1 - weight) * region
    return out


class LoadImage:
    """An image from the input folder; its mask is 1 - alpha (transparent pixels = repaint)."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (image_names(current_or_default().input_dir), {"image_upload": True})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        return check_input_image(image)

    def load_image(self, image):
        return load_image(input_path(image))


def write_folder(folder_type: str, context: RunContext | None = None) -> tuple[Path, Path]:
    """(folder, anchor) of the run in progress for "output" or "temp": where SaveImage / PreviewImage
    write, and the folder each file must resolve inside (image_files.check_prefix)."""
    context = context or current_or_default()
    folder = context.output_dir if folder_type == "output" else context.temp_dir
    return folder, context.write_anchor(folder)


def _save(images: torch.Tensor, folder_type: str, prefix: str, prompt, extra_pnginfo, level: int):
    text = ({"prompt": prompt} if prompt is not None else {}) | dict(extra_pnginfo or {})
    context = current_or_default()
    folder, anchor = write_folder(folder_type, context)
    written = save_images(images, folder, prefix, folder_type, text, level, anchor=anchor,
                          writes=context.writes)
    return {"ui": {"images": written}}


class SaveImage:
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def VALIDATE_VALUES(cls, filename_prefix):
        """A prefix leaving the output folder or holding a newline is refused before anything runs."""
        try:
            folder, anchor = write_folder("output")
            check_prefix(folder, filename_prefix, anchor)
        except InputError as err:
            return str(err)
        return True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": (
                "The prefix for the file to save. This may include formatting information such as "
                "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        return _save(images, "output", filename_prefix, prompt, extra_pnginfo, 4)


class PreviewImage:
    """Like SaveImage, into the temp folder (ComfyUI shows it in the node and keeps it no longer)."""

    DESCRIPTION = "Saves the input images to your ComfyUI output directory."  # ComfyUI's own text
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, prompt=None, extra_pnginfo=None):
        suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
        return _save(images, "temp", f"ComfyUI_temp_{suffix}", prompt, extra_pnginfo, 1)


class EmptyImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
            "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            "color": ("INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}),
        }}

    @classmethod
    def VALIDATE_VALUES(cls, width, height, batch_size=1):
        return limits_verdict(width, height, batch_size, "EmptyImage")

    def generate(self, width, height, batch_size=1, color=0):
        check_pixels(width, height, batch_size, "EmptyImage")
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageScale:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
            "width": ("INT", {"default": 512, **_SIZE}), "height": ("INT", {"default": 512, **_SIZE}),
            "crop": (["disabled", "center"],),
        }}

    @classmethod
    def VALIDATE_VALUES(cls, width, height):
        return limits_verdict(width, height, 1, "scaled image") if width and height else True

    def upscale(self, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        width = width or max(1, round(w * height / h))
        height = height or max(1, round(h * width / w))
        return (resize_images(image, width, height, upscale_method, crop),)


class ImageInvert:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image):
        return (1.0 - image,)


class ImageBatch:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    def batch(self, image1, image2):
        check_pixels(image1.shape[2], image1.shape[1], image1.shape[0] + image2.shape[0], "batched image")
        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize_images(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat([image1, image2.to(image1)]),)


class ImageCompositeMasked:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "destination": ("IMAGE",), "source": ("IMAGE",),
            "x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
            "y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
            "resize_source": ("BOOLEAN", {"default": False}),
        }, "optional": {"mask": ("MASK",)}}

    def composite(self, destination, source, x, y, resize_source, mask=None):
        if resize_source:
            source = resize_images(source, destination.shape[2], destination.shape[1], "bilinear")
        return (paste(destination, source, x, y, mask),)


class ImagePadForOutpaint:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"

    @classmethod
    def INPUT_TYPES(cls):
        side = {"default": 0, "min": 0, "max": 16384, "step": 8}
        return {"required": {
            "image": ("IMAGE",), "left": ("INT", side), "top": ("INT", side),
            "right": ("INT", side), "bottom": ("INT", side),
            "feathering": ("INT", {"default": 40, "min": 0, "max": 16384, "step": 1}),
        }}

    @classmethod
    def VALIDATE_VALUES(cls, left, top, right, bottom):
        """The margins alone give a lower bound of the canvas, whatever the image."""
        return limits_verdict(left + right + 1, top + bottom + 1, 1, "outpaint canvas")

    def expand_image(self, image, left, top, right, bottom, feathering):
        """Grey (0.5) border; mask 1 on the border, fading quadratically into the image."""
        b, h, w, c = image.shape
        check_pixels(w + left + right, h + top + bottom, b, "outpaint canvas")
        canvas = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        canvas[:, top:top + h, left:left + w] = image
        mask = torch.ones(h + top + bottom, w + left + right, dtype=torch.float32)
        inner = torch.zeros(h, w)
        if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
            rows, cols = torch.arange(h, dtype=torch.float32)[:, None], torch.arange(w, dtype=torch.float32)[None]
            distance = torch.full((h, w), float(max(h, w)))
            for padded, dist in ((top, rows), (bottom, h - rows), (left, cols), (right, w - cols)):
                if padded:
                    distance = torch.minimum(distance, dist.expand(h, w))
            inner = torch.where(distance < feathering, ((feathering - distance) / feathering) ** 2, inner)
        mask[top:top + h, left:left + w] = inner
        return canvas, mask[None]


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    LoadImage, SaveImage, PreviewImage, EmptyImage, ImageScale, ImageInvert, ImageBatch,
    ImageCompositeMasked, ImagePadForOutpaint)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
    "EmptyImage": "EmptyImage", "ImageScale": "Upscale Image", "ImageInvert": "Invert Image",
    "ImageBatch": "Batch Images", "ImageCompositeMasked": "ImageCompositeMasked",
    "ImagePadForOutpaint": "Pad Image for Outpainting"}
