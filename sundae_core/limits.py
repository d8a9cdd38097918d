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
