"""The paper's model configurations (Table 3 for the priors, Table 4 for the megapixel VQ-GAN).

`PRESETS[name]` is the prior's HourglassConfig, `PRESET_GRIDS[name]` the (height, width) of the
token grid it was trained on, `PRESET_UNROLL[name]` the number of unrolled training steps.
Sizes of these models (parameters; matmul FLOPs of one forward at batch 1 on the preset grid,
from `hourglass.flops`, which a test checks against torch's FLOP counter):

| preset       | grid  | v    | depth      | params | GFLOP / forward |
|--------------|-------|------|------------|--------|-----------------|
| ffhq256      | 16x16 | 1024 | (3, 16, 3) | 296 M  | 71.7            |
| ffhq1024     | 32x32 | 8192 | (2, 12, 2) | 235 M  | 237.3           |
| celeba       | 16x16 | 1024 | (2, 12, 2) | 220 M  | 51.7            |
| mnist        | 28x28 | 256  | (2, 8, 2)  | 168 M  | 144.9           |
| fashionmnist | 28x28 | 256  | (2, 8, 2)  | 168 M  | 144.9           |
| imagenet     | 16x16 | 1024 | (3, 14, 3) | 272 M  | 68.4            |

One deliberate difference: the paper's ImageNet prior has 12 attention heads at d = 1024. The
authors' code sizes heads independently of d (64 wide each, so 12 heads attend in 768
dimensions); our attention always splits the full width d across the heads and needs
d / heads to be a multiple of 4, which 1024 / 12 is not. The preset uses 16 heads of width 64,
the authors' per-head width at the paper's d.
"""

from __future__ import annotations

from .config import HourglassConfig, VQGANConfig

_PAPER = dict(dim=1024, heads=8, shorten=4, mlp_ratio=4)

PRESETS: dict[str, HourglassConfig] = {
    "ffhq256": HourglassConfig(vocab_size=1024, depth=(3, 16, 3), **_PAPER),
    "ffhq1024": HourglassConfig(vocab_size=8192, depth=(2, 12, 2), **_PAPER),
    "celeba": HourglassConfig(vocab_size=1024, depth=(2, 12, 2), **_PAPER),
    # MNIST-style sets are modelled on raw pixels: each 8-bit grey level is a token.
    "mnist": HourglassConfig(vocab_size=256, depth=(2, 8, 2), num_classes=10, **_PAPER),
    "fashionmnist": HourglassConfig(vocab_size=256, depth=(2, 8, 2), num_classes=10, **_PAPER),
    "imagenet": HourglassConfig(vocab_size=1024, depth=(3, 14, 3), num_classes=1000,
                                **{**_PAPER, "heads": 16}),
}

PRESET_GRIDS: dict[str, tuple[int, int]] = {
    "ffhq256": (16, 16),
    "ffhq1024": (32, 32),
    "celeba": (16, 16),
    "mnist": (28, 28),
    "fashionmnist": (28, 28),
    "imagenet": (16, 16),
}

PRESET_UNROLL: dict[str, int] = {
    "ffhq256": 3, "ffhq1024": 3, "celeba": 3, "mnist": 2, "fashionmnist": 2, "imagenet": 3,
}

# Table 4: the f = 32 VQ-GAN for 1024 x 1024 images (32 x 32 tokens). Encoder channels
# [128, 128, 256, 256, 512, 512] = ch 128 x ch_mult; one residual block per level; attention at
# feature maps of side <= 64, i.e. 64 and 32 (plus the reference model's middle attention);
# 8192 codewords of width 256; dropout 0.
MEGAPIXEL_VQGAN = VQGANConfig(
    resolution=1024,
    ch=128,
    ch_mult=(1, 1, 2, 2, 4, 4),
    num_res_blocks=1,
    attn_resolutions=(64, 32),
    z_channels=256,
    embed_dim=256,
    n_embed=8192,
    dropout=0.0,
)
