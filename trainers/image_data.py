"""Image folders for training: decode once into RAM, then random crops with flips per step.

Images are composited onto white (RGBA art), center-cropped to a square and treated as a canvas
of `resolution` pixels; a training crop of `crop` pixels is cut from that canvas. The canvas is
never materialised at full size: the crop is cut from the cached copy and resized, so training
an f = 32 model on 256 px art "scaled to 1024" costs what 256 px crops cost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from sundae_core.errors import InputError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    resolution: int = 256  # the canvas size images represent
    crop: int = 256  # training crop cut from the canvas
    cache_size: int = 256  # side of the RAM copy (<= resolution; art is rarely sharper)
    flip: bool = True
    val_fraction: float = 0.05
    limit: int = 0  # use only the first N images (0 = all), for quick runs


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist (set data.path)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise InputError(f"image folder {root} holds no .png/.jpg/.jpeg/.webp files")
    return files


def is_validation(path: Path, fraction: float) -> bool:
    """Split by source image, by a stable hash of its name: a file and its flipped copy always
    land on the same side, on every run and every machine."""
    return _hash_unit(path.name) < fraction


def in_subset(path: Path, fraction: float) -> bool:
    """A stable random subset of images (independent of the validation split)."""
    return fraction >= 1 or _hash_unit("subset:" + path.name) < fraction


def _hash_unit(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big") / 2**32


def load_rgb(path: Path, size: int) -> np.ndarray:
    """RGBA composited on white, center-cropped square, resized to size x size, uint8 (h w 3)."""
    try:
        img = Image.open(path)
        img.load()
    except Exception as err:  # PIL raises many types for corrupt files
        raise InputError(f"cannot read image {path}: {err}") from None
    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(white, img).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


class ImageSet:
    """All images of one split in RAM as uint8 (n h w 3)."""

    def __init__(self, config: DataConfig, split: str, progress: bool = True):
        files = list_images(config.path)
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

    def random_batch(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random crops (b 3 crop crop) in [-1, 1] with random horizontal flips."""
        c = self.config
        cache = self.pixels.shape[1]
        region = max(1, round(c.crop * cache / c.resolution))  # crop size in cached pixels
        idx = torch.randint(0, len(self), (batch,), generator=generator)
        ys = torch.randint(0, cache - region + 1, (batch,), generator=generator)
        xs = torch.randint(0, cache - region + 1, (batch,), generator=generator)
        flips = torch.rand(batch, generator=generator) < 0.5
        crops = np.stack([self.pixels[i, y:y + region, x:x + region] for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist())])
        out = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
        if region != c.crop:
            out = F.interpolate(out, size=(c.crop, c.crop), mode="bicubic", align_corners=False).clamp(-1, 1)
        if c.flip:
            out = torch.where(flips[:, None, None, None], out.flip(-1), out)
        return out
