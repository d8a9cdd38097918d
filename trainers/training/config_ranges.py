"""The allowed range of every train/data value of both trainers, in one table.

Checked when the config is resolved, before the run folder is touched: a bad value is then one
error line naming the field, instead of a traceback mid-run (a zero *_every divides by zero) or
a silent misbehaviour (a negative train.grad_clip flips the gradients, train.steps=0 trains
nothing). A field that a trainer's config lacks is skipped.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from sundae_core.errors import ConfigError


@dataclass(frozen=True)
class Range:
    low: float
    high: float = math.inf
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False
    note: str = ""  # what a boundary value means, e.g. "0 = off"

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.high == math.inf:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{text} ({self.note})" if self.note else text


AT_LEAST_1 = Range(1)
SHARE = Range(0, 1)

RANGES: dict[str, Range] = {
    "train.steps": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.accumulate": Range(1, note="1 = the whole batch at once"),
    "train.lr": Range(0, low_open=True),
    "train.betas": Range(0, 1, high_open=True),  # each of them
    "train.weight_decay": Range(0),
    "train.warmup": Range(0, note="0 = no warmup"),
    "train.min_lr_ratio": SHARE,
    "train.grad_clip": Range(0, note="0 = no clipping"),
    "train.ema_decay": SHARE,
    "train.unroll_steps": AT_LEAST_1,
    "train.label_dropout": SHARE,
    "train.block_corruption": Range(0, 1, note="the share of samples; 0 = the paper's corruption only"),
    "train.hole_share": Range(0, 1, high_open=True, note="the share of each batch's rows; 0 = none"),
    "train.shift": Range(0, note="0 = off; under half the token grid's smaller side"),
    "train.perceptual_weight": Range(0),
    "train.disc_start": Range(0),
    "train.disc_weight": Range(0),
    "train.disc_layers": AT_LEAST_1,
    "train.disc_channels": AT_LEAST_1,
    "train.restart_dead_codes_every": Range(0, note="0 = off"),
    "train.view_distill": Range(0, note="0 = off"),
    "train.view_distill_views": Range(1, 9, note="the first n of sundae_core/shifted_views.VIEW_SHIFTS"),
    "train.log_every": AT_LEAST_1,
    "train.sample_every": AT_LEAST_1,
    "train.ckpt_every": AT_LEAST_1,
    "train.keep_every": Range(0, note="0 = keep only the newest model"),
    "train.val_every": AT_LEAST_1,
    "train.val_batches": AT_LEAST_1,
    "train.val_samples": Range(0, note="0 = off"),
    "train.val_images": AT_LEAST_1,
    "data.resolution": AT_LEAST_1,
    "data.crop": AT_LEAST_1,
    "data.cache_size": AT_LEAST_1,
    "data.val_fraction": Range(0, 1, high_open=True),
    "data.limit": Range(0, note="0 = all images"),
    "data.min_subject": SHARE,
    "data.recolour": SHARE,
    "data.synthetic": SHARE,
}

CHOICES: dict[str, tuple[str, ...]] = {
    "train.decay": ("cosine", "linear", "constant"),
}


def check_run_config(config: Any) -> None:
    """ConfigError for the first train/data value out of its range (see RANGES, CHOICES), then
    for the values that must agree with each other."""
    for dotted, allowed in RANGES.items():
        value = _lookup(config, dotted)
        for item in (value if isinstance(value, tuple) else (value,)):
            if item is not None and not (_is_finite_number(item) and allowed.holds(item)):
                raise ConfigError(f"{dotted} must be {allowed.describe()}, got {_show(value)}")
    for dotted, options in CHOICES.items():
        value = _lookup(config, dotted)
        if value is not None and value not in options:
            raise ConfigError(f"{dotted} must be one of {', '.join(options)}, got {value!r}")
    betas = _lookup(config, "train.betas")
    if betas is not None and len(betas) != 2:
        raise ConfigError(f"train.betas must list 2 values (Adam's beta1, beta2), got {_show(betas)}")
    _check_crop(config)
    accumulate, batch = _lookup(config, "train.accumulate"), _lookup(config, "train.batch_size")
    if accumulate is not None and batch % accumulate:
        raise ConfigError(f"train.batch_size ({batch}) must split into train.accumulate ({accumulate}) "
                          f"equal micro-batches: make the batch a multiple of it")


def _check_crop(config: Any) -> None:
    """The crop is cut from the canvas, and the VQ-GAN must map it to whole latent positions."""
    data, model = getattr(config, "data", None), getattr(config, "model", None)
    crop, resolution = getattr(data, "crop", None), getattr(data, "resolution", None)
    if crop is None or resolution is None:
        return
    if crop > resolution:
        raise ConfigError(f"data.crop ({crop}) must be at most data.resolution ({resolution}), the canvas "
                          "it is cut from")
    factor = getattr(model, "factor", None)
    if factor and crop % factor:
        raise ConfigError(f"data.crop ({crop}) must be a multiple of the VQ-GAN's downsampling factor "
                          f"{factor} (2 ** (len(model.ch_mult) - 1))")


def _lookup(config: Any, dotted: str) -> Any:
    """config.section.field, or None when the config has no such field."""
    node = config
    for name in dotted.split("."):
        if not dataclasses.is_dataclass(node) or name not in {f.name for f in dataclasses.fields(node)}:
            return None
        node = getattr(node, name)
    return node


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    return f"[{', '.join(f'{v:g}' for v in value)}]" if isinstance(value, tuple) else f"{value:g}"
