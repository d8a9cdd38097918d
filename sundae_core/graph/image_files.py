"""Image files for the built-in LoadImage / SaveImage: ComfyUI's conventions, confined folders.

IMAGE tensors are `(b h w c)` float32 in [0, 1]; MASK tensors `(b h w)`, 1 = the area to change.
Every path a workflow names is resolved inside its folder (input, output or temp); a name that
would land outside it (`../x`, an absolute path, a symlink out) is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ANNOTATION = re.compile(r"^(.*) \[(input|output|temp)\]$")


def inside(root: Path, relative: str, what: str) -> Path:
    """`root / relative`, refusing any name that resolves outside `root`."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise InputError(f"{what} {relative!r} points outside its folder {root}; use a name inside it")
    return path


def split_annotation(name: str) -> tuple[str, str | None]:
    """ComfyUI's annotated names: 'a.png [output]' -> ('a.png', 'output')."""
    match = ANNOTATION.match(name)
    return (match.group(1), match.group(2)) if match else (name, None)


def list_images(folder: Path) -> list[str]:
    if not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pil_to_image(picture: Image.Image) -> torch.Tensor:
    """A PIL picture as IMAGE `(1 h w 3)`; 16-bit grey ('I') is scaled the way ComfyUI does."""
    if picture.mode == "I":
        picture = picture.point(lambda v: v * (1 / 255))
    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())[None]


def image_to_pil(image: torch.Tensor) -> Image.Image:
    """One `(h w c)` IMAGE as an 8-bit PIL picture (rounded, so load -> save is lossless)."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def open_picture(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"image {path} does not exist; put it in the input folder {path.parent}")
    try:
        picture = Image.open(path)
        picture.load()
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: not a readable image ({err})") from None
    return picture


def load_image(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """LoadImage: frames of the same size as a batch, and mask = 1 - alpha.

    A picture without alpha gives ComfyUI's 64 x 64 all-zero mask (nothing to repaint).
    """
    picture = open_picture(path)
    images, masks = [], []
    for frame in ImageSequence.Iterator(picture):
        frame = ImageOps.exif_transpose(frame)
        image = pil_to_image(frame)
        if images and image.shape != images[0].shape:
            break  # like ComfyUI: later frames of another size are ignored
        images.append(image)
        masks.append(_alpha_mask(frame))
    return torch.cat(images), torch.cat(masks)


def _alpha_mask(frame: Image.Image) -> torch.Tensor:
    if frame.mode == "P" and "transparency" in frame.info:
        frame = frame.convert("RGBA")
    if "A" not in frame.getbands():
        return torch.zeros(1, 64, 64, dtype=torch.float32)
    alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
    return 1.0 - torch.from_numpy(alpha.copy())[None]


def load_channel(path: Path, channel: str) -> torch.Tensor:
    """LoadImageMask: one channel as a mask; alpha is inverted (1 = transparent = repaint)."""
    picture = ImageOps.exif_transpose(open_picture(path))
    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    if picture.mode == "I":
        picture = picture.point(lambda v: v * (1 / 255))
    band = channel[0].upper()
    if picture.mode not in ("RGB", "RGBA", "L", "LA"):
        picture = picture.convert("RGBA")
    if band not in picture.getbands():
        return torch.zeros(1, 64, 64, dtype=torch.float32)
    mask = torch.from_numpy(np.asarray(picture.getchannel(band), dtype=np.float32) / 255.0)[None]
    return 1.0 - mask if band == "A" else mask


def save_images(images: torch.Tensor, root: Path, prefix: str, folder_type: str,
                text: Mapping[str, Any], compress_level: int) -> list[dict[str, str]]:
    """Write `<prefix>_00001_.png`, ... (counter after the highest already there), text chunks embedded.

    Returns ComfyUI's ui entries `{filename, subfolder, type}`.
    """
    root = Path(root).resolve()
    target = inside(root, prefix, "filename_prefix")
    folder, stem = target.parent, target.name
    if target == root or not stem:
        raise InputError(f"filename_prefix {prefix!r} names no file; give a name such as 'sundae'")
    folder.mkdir(parents=True, exist_ok=True)
    counter = _next_counter(folder, stem)
    subfolder = "" if folder == root else folder.relative_to(root).as_posix()
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, json.dumps(value))
    written = []
    for batch_number, image in enumerate(images):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        image_to_pil(image).save(folder / name, pnginfo=info, compress_level=compress_level)
        written.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return written


def _next_counter(folder: Path, stem: str) -> int:
    pattern = re.compile(re.escape(stem).replace("%batch_num%", r"\d+") + r"_(\d+)_?\.png")
    found = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return max(found, default=0) + 1
