"""Decoding image files safely: the pixel ceiling is checked from the header, before decoding.

PIL reads only the header in `Image.open`; the pixels are decoded by `load()`. A 292 KB PNG can
declare 10000 x 10000 pixels (3.8 GB decoded) and a 1 x 178,000,000 one ends in MemoryError, so
the size is checked against sundae_core.limits in between. LoadImage and the trainers' image
loader both open files here. 16-bit images (PIL modes I;16 and I, 0..65535) are scaled to 8 bits
here too: PIL's own conversion clips them, which turns almost every pixel white.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .limits import check_pixels

SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# The one list of file suffixes taken as pictures: LoadImage's input list and the trainers' and
# evaluators' image folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """A file whose suffix (any case) is in IMAGE_SUFFIXES."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def open_image(path: str | Path) -> Image.Image:
    """The picture at `path`, decoded, after checking its declared size against the ceiling.

    Raises InputError for a missing, unreadable or oversized file (one line, the file named).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # our ceiling decides; PIL's own (a warning at 89 MP) would only add noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(path)
            width, height = picture.size
            check_pixels(width, height, what=f"image {path}")
            picture.load()
    except InputError:
        raise
    except Image.DecompressionBombError as err:
        raise InputError(f"image {path}: refused by PIL's decompression-bomb guard ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        # PIL raises many types for corrupt files
        raise InputError(f"{path}: not a readable image ({err})") from None
    except MemoryError:
        raise InputError(f"image {path}: not enough memory to decode it") from None
    return picture


def to_8bit(picture: Image.Image) -> Image.Image:
    """16-bit grey (modes I;16*, I: 0..65535) scaled to 8-bit grey 'L'; other modes unchanged."""
    if picture.mode not in SIXTEEN_BIT_MODES:
        return picture
    values = np.asarray(picture).astype(np.float32)
    return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), "L")
