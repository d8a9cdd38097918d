"""Image folders for training: decode once into RAM, then random crops with flips per step.

Images are composited onto white (RGBA art), center-cropped to a square and treated as a canvas
of `resolution` pixels; a training crop of `crop` pixels is cut from that canvas. The canvas is
never materialised at full size: the crop is cut from the cached copy and resized, so training
an f = 32 model on 256 px art "scaled to 1024" costs what 256 px crops cost.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from sundae_core.errors import InputError
from sundae_core.image_decode import IMAGE_SUFFIXES, is_image_file, open_image, to_8bit

from .colour_augment import recolour, synthetic_canvases

# The held-out share of every image folder; the embedded default model's evaluation uses it.
HELD_OUT_FRACTION = 0.10
# Emoji skin-tone modifiers and the variation selector: variants of one emoji differ only in these.
SKIN_TONES = frozenset({"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"})
VARIATION_SELECTOR = "fe0f"
# A frame cut from an animation is named "<source stem>__frame<index>" (`sundae-prepare-emoji
# --animated`); its key is its source's, so every frame lands on the same side of the split.
FRAME_SUFFIX = re.compile(r"__frame\d+$")


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    resolution: int = 256  # the canvas size images represent
    crop: int = 256  # training crop cut from the canvas
    cache_size: int = 256  # side of the RAM copy (<= resolution; art is rarely sharper)
    flip: bool = True
    val_fraction: float = HELD_OUT_FRACTION
    limit: int = 0  # use only the first N images (0 = all), for quick runs
    # Least share of a crop that must be subject (pixels not near-white). Art on white canvases
    # gives mostly-blank random crops; they teach the encoder to send everything to the
    # background code (the codebook collapsed within 40 steps). 0 = plain random crops.
    min_subject: float = 0.0
    # Colour levers (colour_augment.py): the share of crops recoloured (channel permutation + hue
    # rotation) and the share replaced by flat or two-colour saturated canvases. Both 0 = the art
    # as it is; the art alone left the encoder without green or blue codes.
    recolour: float = 0.0
    synthetic: float = 0.0
    # Encode each crop inside its whole canvas, as the decoder meets tokens at inference (a frozen
    # encoder only: train.freeze_encoder). The encoder sees about 330 px around a token, so a
    # 256 px crop encoded alone gives other tokens than the same pixels in a 1024 px canvas: 31 %
    # of a held-out emoji's tokens differ, and the interiors of flat areas at 1024 px are codes a
    # crop never produces (flat greys decoded 6-17 of 255 off there, 5-11 at 256 px; session 28).
    whole_canvas: bool = False
    # With whole_canvas: crops cut from each encoded canvas. A 1024 px encode costs about twice a
    # crop's decoder step on the CPU, so 4 crops per canvas take the step from ~3x the crop-only
    # step to ~1.4x, for a batch of fewer distinct images. data.batch_size must be a multiple.
    crops_per_canvas: int = 1

    def canvases_per_batch(self, batch: int) -> int:
        """How many whole canvases a batch of `batch` crops is cut from (data.crops_per_canvas)."""
        if self.crops_per_canvas < 1 or batch % self.crops_per_canvas:
            raise InputError(f"data.crops_per_canvas ({self.crops_per_canvas}) must be at least 1 and divide "
                             f"the batch ({batch}, train.batch_size)")
        return batch // self.crops_per_canvas


def image_paths(root: str | Path) -> list[Path]:
    """Every picture under `root`, subfolders included, sorted by path; InputError when the folder
    is missing or holds none. (LoadImage's `graph.image_files.image_names` lists one folder's names.)"""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist (set data.path)")
    files = sorted(p for p in root.rglob("*") if is_image_file(p))
    if not files:
        raise InputError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def emoji_key(stem: str) -> str:
    """The name shared by all variants of one image: the file stem in lower case with the emoji
    skin-tone modifiers (1f3fb-1f3ff) and variation selector (fe0f) removed from its "-"-separated
    parts ("1f44b-1f3fd" -> "1f44b"), and an animation frame's "__frame<index>" suffix dropped
    ("1f600__frame12" -> "1f600"). Other file names are just lower-cased."""
    stem = FRAME_SUFFIX.sub("", stem.lower())
    parts = [p for p in stem.split("-") if p not in SKIN_TONES and p != VARIATION_SELECTOR]
    return "-".join(parts) or stem


def is_validation(path: Path, fraction: float = HELD_OUT_FRACTION) -> bool:
    """The project's held-out rule, stable across runs and machines: an image is held out when
    sha1(emoji_key(stem)), its first 4 bytes read as a big-endian integer, divided by 2**32, is
    below `fraction`. Keyed by source image, so a flipped copy or a skin-tone variant always lands
    on the same side as its original."""
    return _hash_unit(emoji_key(path.stem)) < fraction


def in_subset(path: Path, fraction: float, above: float = 0.0) -> bool:
    """A stable random subset of images (independent of the validation split): those whose hash
    lies in [above, fraction), so the subsets of growing fractions nest and `above` = a smaller
    fraction leaves out exactly the images that one took (the hole set's --extend)."""
    if fraction >= 1 and above <= 0:
        return True
    unit = _hash_unit("subset:" + path.name)
    return above <= unit and (fraction >= 1 or unit < fraction)


def _hash_unit(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big") / 2**32


def load_rgb(path: Path, size: int) -> np.ndarray:
    """RGBA composited on white, center-cropped square, resized to size x size, uint8 (h w 3)."""
    # pixel ceiling checked from the header before decoding; 16-bit grey scaled, not clipped
    img = to_8bit(open_image(path)).convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(white, img).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def load_rgb_scaled(path: Path, size: int, scale: float = 1.0) -> np.ndarray:
    """load_rgb on a size x size white canvas with the image shrunk to `scale` of it, centred:
    emoji drawn smaller than the canvas, for multi-scale training data. One resample from the
    source, as load_rgb does."""
    if not 0 < scale <= 1:
        raise InputError(f"scale {scale} must be in (0, 1]")
    inner = max(1, round(size * scale))
    if inner == size:
        return load_rgb(path, size)
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    top = (size - inner) // 2
    canvas[top:top + inner, top:top + inner] = load_rgb(path, inner)
    return canvas


SUBJECT_TRIES = 8  # crop positions drawn per image when data.min_subject asks for subject
BACKGROUND_LEVEL = 245  # a pixel whose channels all reach this is background (white canvas)


def subject_share(pixels: np.ndarray) -> float:
    """Share of (h w 3) uint8 pixels that are not near-white background."""
    return float((pixels < BACKGROUND_LEVEL).any(-1).mean())


class ImageSet:
    """All images of one split in RAM as uint8 (n h w 3)."""

    def __init__(self, config: DataConfig, split: str, progress: bool = True):
        files = image_paths(config.path)
        if config.limit:
            files = files[: config.limit]
        want_val = split == "val"
        files = [f for f in files if is_validation(f, config.val_fraction) == want_val]
        if not files:
            raise InputError(f"no images in the {split} split of {config.path} (val_fraction={config.val_fraction})")
        self.config, self.files = config, files
        size = min(config.cache_size, config.resolution)
        self.pixels = np.stack([load_rgb(f, size) for f in tqdm(files, desc=f"loading {split}", disable=not progress)])

    def __len__(self) -> int:
        return len(self.files)

    def full(self, indices, size: int | None = None) -> torch.Tensor:
        """Whole images (b 3 size size) in [-1, 1] at `size` (default: the canvas resolution)."""
        x = torch.from_numpy(self.pixels[list(indices)]).permute(0, 3, 1, 2).float() / 127.5 - 1
        size = size or self.config.resolution
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
        return x

    def _subject_window(self, i: int, ys: list[int], xs: list[int], region: int) -> tuple[int, int]:
        """Of the candidate top-left corners (ys[k], xs[k]) of a region x region window of image i
        (cached pixels), the first with at least data.min_subject subject, else the one with most."""
        if len(ys) == 1:
            return ys[0], xs[0]
        shares = [subject_share(self.pixels[i, y:y + region, x:x + region]) for y, x in zip(ys, xs)]
        good = [k for k, share in enumerate(shares) if share >= self.config.min_subject]
        k = good[0] if good else int(np.argmax(shares))
        return ys[k], xs[k]

    def random_canvas_batch(self, batch: int, generator: torch.Generator, factor: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For data.whole_canvas: whole canvases (n 3 R R), the crops (b 3 crop crop) cut from them
        on the token grid, each crop's top-left corner in tokens (b 2, yx) and its canvas's index
        (b): n = b / data.crops_per_canvas. Flips, recolouring and synthetic canvases (drawn at R)
        apply to the whole canvas; crops are chosen for subject as random_batch chooses them."""
        c, cache = self.config, self.pixels.shape[1]
        if c.resolution % factor or c.crop % factor or (factor * cache) % c.resolution:
            raise InputError(f"data.whole_canvas cuts crops on the token grid: data.resolution "
                             f"({c.resolution}), data.crop ({c.crop}) and the grid step in cached pixels "
                             f"(factor {factor} x data.cache_size {cache} / resolution) must be whole numbers")
        n = c.canvases_per_batch(batch)
        step = factor * cache // c.resolution  # one token in cached pixels
        region = c.crop * cache // c.resolution
        idx = torch.randint(0, len(self), (n,), generator=generator)
        owners = torch.arange(batch) // c.crops_per_canvas
        tries = SUBJECT_TRIES if c.min_subject > 0 else 1
        cells = (cache - region) // step + 1
        ys = torch.randint(0, cells, (batch, tries), generator=generator) * step
        xs = torch.randint(0, cells, (batch, tries), generator=generator) * step
        flips = torch.rand(n, generator=generator) < 0.5
        picks = [self._subject_window(i, y_row, x_row, region)
                 for i, y_row, x_row in zip(idx[owners].tolist(), ys.tolist(), xs.tolist())]
        corners = torch.tensor(picks) // step  # (b 2) in tokens, on the unflipped canvas
        # flipped and recoloured at the cached size, then brought to the canvas size: both act on
        # each pixel's colour alone, so the order changes nothing but the cost (16 x fewer pixels)
        small = self.full(idx.tolist(), cache)
        if c.flip:
            small = torch.where(flips[:, None, None, None], small.flip(-1), small)
            mirrored = c.resolution // factor - c.crop // factor - corners[:, 1]
            corners[:, 1] = torch.where(flips[owners], mirrored, corners[:, 1])
        if c.recolour > 0:
            small = recolour(small, c.recolour, generator)
        chosen = torch.rand(n, generator=generator) < c.synthetic
        canvases = torch.empty(n, 3, c.resolution, c.resolution)
        if not bool(chosen.all()):
            canvases[~chosen] = (small[~chosen] if cache == c.resolution else F.interpolate(
                small[~chosen], size=(c.resolution, c.resolution), mode="bicubic", align_corners=False).clamp(-1, 1))
        if bool(chosen.any()):
            canvases[chosen] = synthetic_canvases(int(chosen.sum()), c.resolution, generator)
        crops = torch.stack([canvases[k, :, y * factor:y * factor + c.crop, x * factor:x * factor + c.crop]
                             for k, (y, x) in zip(owners.tolist(), corners.tolist())])
        return canvases, crops, corners, owners

    def random_batch(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random crops (b 3 crop crop) in [-1, 1] with random horizontal flips."""
        c = self.config
        cache = self.pixels.shape[1]
        region = max(1, round(c.crop * cache / c.resolution))  # crop size in cached pixels
        idx = torch.randint(0, len(self), (batch,), generator=generator)
        tries = SUBJECT_TRIES if c.min_subject > 0 else 1
        ys = torch.randint(0, cache - region + 1, (batch, tries), generator=generator)
        xs = torch.randint(0, cache - region + 1, (batch, tries), generator=generator)
        flips = torch.rand(batch, generator=generator) < 0.5
        crops = []
        for i, y_row, x_row in zip(idx.tolist(), ys.tolist(), xs.tolist()):
            y, x = self._subject_window(i, y_row, x_row, region)
            crops.append(self.pixels[i, y:y + region, x:x + region])
        crops = np.stack(crops)
        out = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
        if region != c.crop:
            out = F.interpolate(out, size=(c.crop, c.crop), mode="bicubic", align_corners=False).clamp(-1, 1)
        if c.flip:
            out = torch.where(flips[:, None, None, None], out.flip(-1), out)
        if c.recolour > 0:
            out = recolour(out, c.recolour, generator)
        if c.synthetic > 0:
            chosen = torch.rand(batch, generator=generator) < c.synthetic
            out = torch.where(chosen[:, None, None, None], synthetic_canvases(batch, c.crop, generator), out)
        return out
