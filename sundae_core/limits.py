"""Ceilings on what one input may make the process allocate: pixels, batches of pixels, models.

One place for every limit that nodes, the workflow executor, loaders and trainers check, so a
hostile or mistyped input (a 1 x 178,000,000 PNG, EmptyImage 16384 x 16384 x 4096, a prior with
dim 10**7) ends in one clear error before memory is allocated, never in a MemoryError or a swap
storm. Each ceiling can be raised through an environment variable by whoever has the memory; the
error names the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import HourglassConfig, VQGANConfig
from .errors import InputError


@dataclass(frozen=True)
class Ceiling:
    env: str  # environment variable that overrides the default
    default: int
    unit: str  # how the number reads in messages

    def value(self) -> int:
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(float(raw))
        except ValueError:
            raise InputError(f"${self.env}={raw!r} is not a number; unset it or give a count of {self.unit}") from None
        if value < 1:
            raise InputError(f"${self.env}={raw!r} must be at least 1")
        return value


# 8192 x 8192: a 256 x 256 token grid at f = 32, far beyond what the prior was trained on.
IMAGE_PIXELS = Ceiling("SUNDAE_MAX_IMAGE_PIXELS", 8192 * 8192, "pixels")
# All images of a batch together: 2**28 pixels are 3 GiB as a float32 IMAGE tensor.
BATCH_PIXELS = Ceiling("SUNDAE_MAX_BATCH_PIXELS", 2 ** 28, "pixels")
# Parameters of one model, counted in float32 bytes (the largest preset is well under 1 GiB).
MODEL_BYTES = Ceiling("SUNDAE_MAX_MODEL_BYTES", 16 * 2 ** 30, "bytes")
# Blocks of one model, counted from its config before anything is built: building even the
# shape-only skeleton costs time and memory per block, however small each one is (a 50 KB
# checkpoint asking for depth [1, 100000, 1] ran for minutes and took 1.3 GB before the byte
# ceiling could say no). The presets count at most 24 (prior) and 37 (VQ-GAN) blocks.
MODEL_BLOCKS = Ceiling("SUNDAE_MAX_MODEL_BLOCKS", 1024, "blocks")


def pixel_problem(width: int, height: int, batch: int = 1, what: str = "image") -> str | None:
    """Why width x height (x batch) is over a ceiling, or None when it fits."""
    pixels, one, many = width * height, IMAGE_PIXELS.value(), BATCH_PIXELS.value()
    if pixels > one:
        return (f"{what} of {width}x{height} (width x height) has {pixels:,} pixels, over the ceiling of "
                f"{one:,}; make it smaller, or raise ${IMAGE_PIXELS.env} if you have the memory")
    if pixels * batch > many:
        return (f"{what} batch of {batch} x {width}x{height} (width x height) has {pixels * batch:,} pixels, "
                f"over the ceiling of {many:,}; use a smaller batch or size, or raise ${BATCH_PIXELS.env}")
    return None


def check_pixels(width: int, height: int, batch: int = 1, what: str = "image") -> None:
    """Raise InputError when width x height (x batch) pixels would be over a ceiling."""
    problem = pixel_problem(width, height, batch, what)
    if problem:
        raise InputError(problem)


def model_bytes_problem(parameter_bytes: int, what: str) -> str | None:
    """Why a model of `parameter_bytes` (float32) is refused, or None when it fits."""
    ceiling = MODEL_BYTES.value()
    if parameter_bytes <= ceiling:
        return None
    return (f"{what} asks for {parameter_bytes / 2 ** 30:,.1f} GiB of parameters, over the ceiling of "
            f"{ceiling / 2 ** 30:,.1f} GiB; check its sizes (dim, ch, vocab), or raise ${MODEL_BYTES.env}")


def model_blocks(config: VQGANConfig | HourglassConfig) -> int:
    """Blocks the model of `config` would have, from the config's numbers alone: transformer blocks
    plus each shortening's down- and upsampler (prior); residual blocks, resamplers and the middle
    blocks of encoder and decoder (VQ-GAN; attention blocks, at most one per residual block, are
    not counted)."""
    if isinstance(config, HourglassConfig):
        levels = config.depth_levels()
        return levels.total + 2 * len(levels.shortened)
    count, per_level = len(config.ch_mult), max(config.num_res_blocks, 0)
    return count * per_level + count * (max(config.decoder_blocks, 0) + 1) + 2 * (count - 1) + 4


def model_blocks_problem(config: VQGANConfig | HourglassConfig, what: str) -> str | None:
    """Why a config asks for too many blocks to build, or None when it fits."""
    blocks, ceiling = model_blocks(config), MODEL_BLOCKS.value()
    if blocks <= ceiling:
        return None
    sizes = ("depth" if isinstance(config, HourglassConfig)
             else "ch_mult (levels), num_res_blocks and decoder_res_blocks")
    return (f"{what} asks for {blocks:,} blocks, over the ceiling of {ceiling:,}; check its {sizes}, or "
            f"raise ${MODEL_BLOCKS.env}")
