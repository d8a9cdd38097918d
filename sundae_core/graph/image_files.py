"""Image files for the built-in LoadImage / SaveImage: ComfyUI's conventions, confined folders.

IMAGE tensors are `(b h w c)` float32 in [0, 1]; MASK tensors `(b h w)`, 1 = the area to change.
Every path a workflow names is resolved inside its folder (input, output or temp); a name that
would land outside it (`../x`, an absolute path, a symlink out) or holds a control character (a
newline) is refused. Files are written only through `check_prefix`, one rule for SaveImage and
PreviewImage alike: the file must also stay inside the folder's anchor (RunContext.write_anchor:
the output folder for the default temp folder output/temp, so a `temp` symlink leading out is
refused). Pictures are decoded through sundae_core.image_decode (pixel ceiling from the header,
16-bit scaled properly). Saved files are created exclusively, so two processes writing the same
prefix never overwrite each other's images; the text chunks embedded in them (the prompt, the UI
workflow) are capped at MAX_PNG_TEXT_BYTES per image and MAX_RUN_PNG_TEXT_BYTES per run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from ..errors import InputError
from ..image_decode import is_image_file, open_image, to_8bit
from ..limits import check_pixels
from .context import RunWrites
from .filename_prefix import server_tokens

ANNOTATION = re.compile(r"^(.*) \[(input|output|temp)\]$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_COUNTED = re.compile(r"(.*)_(\d+)_?\.png")  # a saved image: <stem>_<counter>_.png
# Multi-frame formats whose later frames are not a batch: ComfyUI's LoadImage keeps an MPO's first
# picture only (its later ones are previews or other views of the same shot).
SINGLE_PICTURE_FORMATS = frozenset({"MPO"})
# All text chunks of one PNG together (ComfyUI embeds the whole prompt in every image of a batch,
# so a 10 MB workflow x batch 20 once wrote 201 MB); a chunk that does not fit is left out.
MAX_PNG_TEXT_BYTES = 2 * 2 ** 20
# All text chunks of one run together (RunContext.writes). The choice: keep ComfyUI's rule that
# every image carries the prompt and workflow (so any one of them reopens the graph), and cap the
# run's total; images saved after the cap is reached carry no text. A 1.9 MB workflow at batch 100
# once wrote 182 MB of text; an ordinary 50 KB workflow and its prompt still go into the first
# few hundred images.
MAX_RUN_PNG_TEXT_BYTES = 16 * MAX_PNG_TEXT_BYTES

log = logging.getLogger("sundae")


def inside(root: Path, relative: str, what: str) -> Path:
    """`root / relative`, refusing any name that resolves outside `root` or holds a control character."""
    if CONTROL_CHARACTERS.search(relative):
        raise InputError(f"{what} {relative!r} contains a control character (such as a newline); "
                         "use a name on one line")
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise InputError(f"{what} {relative!r} points outside its folder {root}; use a name inside it")
    return path


def split_annotation(name: str) -> tuple[str, str | None]:
    """ComfyUI's annotated names: 'a.png [output]' -> ('a.png', 'output')."""
    match = ANNOTATION.match(name)
    return (match.group(1), match.group(2)) if match else (name, None)


def image_names(folder: Path) -> list[str]:
    """The names of the pictures directly in `folder` (LoadImage's choices); [] if it is missing.
    (The trainers' `image_data.image_paths` is the recursive one that refuses an empty folder.)"""
    if not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if is_image_file(p))


def pil_to_image(picture: Image.Image) -> torch.Tensor:
    """A PIL picture as IMAGE `(1 h w 3)`; 16-bit grey (0..65535) is scaled so 65535 is white."""
    array = np.asarray(to_8bit(picture).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())[None]


def image_to_pil(image: torch.Tensor) -> Image.Image:
    """One `(h w c)` IMAGE as an 8-bit PIL picture (rounded, so load -> save is lossless)."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def open_picture(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"image {path} does not exist; put it in the input folder {path.parent}")
    return open_image(path)


def load_image(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """LoadImage: frames of the first frame's size as a batch, and mask = 1 - alpha.

    As ComfyUI's LoadImage: a frame of another size is skipped and the frames after it still
    count, and an MPO (the multi-picture JPEG phones write, a photo plus a preview or a second
    view) gives its first picture only. A picture without alpha gives ComfyUI's 64 x 64 all-zero
    mask (nothing to repaint). All frames together stay under the batch pixel ceiling, checked
    before each frame is decoded.
    """
    picture = open_picture(path)
    frames = [picture] if picture.format in SINGLE_PICTURE_FORMATS else ImageSequence.Iterator(picture)
    images, masks, size = [], [], None
    for frame in frames:
        check_pixels(*frame.size, batch=len(images) + 1, what=f"image {path}")
        frame = ImageOps.exif_transpose(frame)
        size = size or frame.size
        if frame.size != size:
            continue
        images.append(pil_to_image(frame))
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
    """LoadImageMask: one channel as a mask; alpha is inverted (1 = transparent = repaint).

    Like ComfyUI, every picture is read as RGBA first: grey gives R = G = B, no alpha gives A = 255
    (a mask of zeros of the picture's size).
    """
    picture = to_8bit(ImageOps.exif_transpose(open_picture(path))).convert("RGBA")
    band = channel[0].upper()
    mask = torch.from_numpy(np.asarray(picture.getchannel(band), dtype=np.float32) / 255.0)[None]
    return 1.0 - mask if band == "A" else mask


def check_prefix(root: Path, prefix: Any, anchor: Path | None = None) -> Path:
    """The file stem a SaveImage prefix names inside `root`; InputError if it leaves the folder,
    names no file or holds a control character, or if it resolves outside `anchor` (a folder
    `root` lies in, see RunContext.write_anchor: a symlinked `root` must not lead out of it). The
    one rule for every file the executor writes, used by validation and by saving alike."""
    if not isinstance(prefix, str):
        raise InputError(f"filename_prefix must be text, got {prefix!r}")
    target = inside(root, prefix, "filename_prefix")
    if target == Path(root).resolve() or not target.name:
        raise InputError(f"filename_prefix {prefix!r} names no file; give a name such as 'sundae'")
    if anchor is not None:
        fence = Path(anchor).resolve()
        if fence not in target.parents:
            raise InputError(f"the folder {root} leads outside {anchor} (through a symlink), so "
                             f"{prefix!r} would be written to {target.parent}; replace the link with a "
                             "real folder")
    return target


def save_images(images: torch.Tensor, root: Path, prefix: str, folder_type: str,
                text: Mapping[str, Any], compress_level: int, anchor: Path | None = None,
                writes: RunWrites | None = None) -> list[dict[str, str]]:
    """Write `<prefix>_00001_.png`, ... (counter after the highest already there), text chunks embedded.

    The prefix's server-side tokens (`%width%`, `%year%`, ...: filename_prefix.server_tokens) are
    expanded first, from the first image's size, and `%batch_num%` per image. `anchor`: see
    check_prefix. `writes`: what the run wrote so far (RunContext.writes), so the text cap, the
    JSON made once and the folder read once hold across every image of the run. Each file is
    created exclusively: a name another process took in the meantime is skipped, never
    overwritten. Returns ComfyUI's ui entries `{filename, subfolder, type}`.
    """
    if isinstance(prefix, str):  # check_prefix refuses anything else
        prefix = server_tokens(prefix, width=images.shape[2], height=images.shape[1])
    target = check_prefix(root, prefix, anchor)
    root = Path(root).resolve()
    folder, stem = target.parent, target.name
    folder.mkdir(parents=True, exist_ok=True)
    writes = RunWrites() if writes is None else writes
    counter = _next_counter(folder, stem, writes)
    subfolder = "" if folder == root else folder.relative_to(root).as_posix()
    written = []
    for batch_number, image in enumerate(images):
        name, counter = _write_new(folder, stem.replace("%batch_num%", str(batch_number)), counter,
                                   image_to_pil(image), png_text(text, writes=writes), compress_level)
        written.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        if folder in writes.counters and "%batch_num%" not in stem:
            writes.counters[folder][stem] = counter
        counter += 1
    return written


def png_text(text: Mapping[str, Any], limit: int | None = None, writes: RunWrites | None = None) -> PngInfo:
    """Text chunks of one PNG as JSON, in order, leaving out any that would take this PNG's total
    over `limit` or the run's total (`writes`) over MAX_RUN_PNG_TEXT_BYTES; each left-out key is
    reported once per run."""
    limit = MAX_PNG_TEXT_BYTES if limit is None else limit
    writes = RunWrites() if writes is None else writes
    info, used = PngInfo(), 0
    for key, value in text.items():
        encoded = _json_once(value, writes)
        size = len(key) + len(encoded)
        if used + size > limit:
            why = f"over the {limit:,}-byte cap on a PNG's text"
        elif writes.text_bytes + size > MAX_RUN_PNG_TEXT_BYTES:
            why = f"over the {MAX_RUN_PNG_TEXT_BYTES:,}-byte cap on the text of one run's PNGs"
        else:
            used += size
            writes.text_bytes += size
            info.add_text(key, encoded)
            continue
        if key not in writes.left_out:
            writes.left_out.add(key)
            log.warning(f"the {key!r} text ({len(encoded):,} bytes) is not embedded in the saved PNG: {why} "
                        "(said once per run)")
    return info


def _json_once(value: Any, writes: RunWrites) -> str:
    """`json.dumps(value)`, made once per run for each object (10,000 savers of one 4 MB prompt
    used to serialise it 10,000 times)."""
    known = writes.encoded.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    encoded = json.dumps(value)
    if isinstance(value, (dict, list)):
        writes.encoded[id(value)] = (value, encoded)
    return encoded


def _write_new(folder: Path, stem: str, counter: int, picture: Image.Image, info: PngInfo,
               compress_level: int) -> tuple[str, int]:
    """Create `<stem>_<counter>_.png` exclusively (the next free counter); returns (name, counter)."""
    while True:
        name = f"{stem}_{counter:05}_.png"
        try:
            file = open(folder / name, "xb")
        except FileExistsError:
            counter += 1
            continue
        try:
            with file:
                picture.save(file, format="PNG", pnginfo=info, compress_level=compress_level)
        except BaseException:
            (folder / name).unlink(missing_ok=True)  # never leave a half-written image behind
            raise
        return name, counter


def _next_counter(folder: Path, stem: str, writes: RunWrites | None = None) -> int:
    """One more than the highest counter of `<stem>_<counter>_.png` in `folder`. With `writes`, the
    folder is read once per run and kept up to date by save_images (10,000 savers into one folder
    read it 10,000 times); a name another process takes meanwhile is skipped by _write_new."""
    if writes is None or "%batch_num%" in stem:
        pattern = re.compile(re.escape(stem).replace("%batch_num%", r"\d+") + r"_(\d+)_?\.png")
        found = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
        return max(found, default=0) + 1
    highest = writes.counters.get(folder)
    if highest is None:
        highest = writes.counters[folder] = {}
        for path in folder.iterdir():
            if match := _COUNTED.fullmatch(path.name):
                highest[match.group(1)] = max(highest.get(match.group(1), 0), int(match.group(2)))
    return highest.get(stem, 0) + 1
