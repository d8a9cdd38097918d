"""PatchGAN discriminator for VQ-GAN training (the pix2pix "NLayer" design the reference uses).

With 3 layers and 64 base channels each output logit judges a 70x70 pixel patch:
  conv4 s2 (3 -> 64), LReLU;  conv4 s2 (64 -> 128), norm, LReLU;  conv4 s2 (128 -> 256), norm, LReLU;
  conv4 s1 (256 -> 512), norm, LReLU;  conv4 s1 (512 -> 1).
images (b c h w) -> logits (b 1 h' w'), h' = h/8 - 2.

Normalisation: the reference uses BatchNorm. We default to GroupNorm (32 groups) because
- BatchNorm's statistics depend on who shares the batch: real and fake batches are normalised
  separately, per DDP rank, and at the batch sizes a CPU run affords (1-4) they are noise;
- GroupNorm is per sample, so every rank computes the same function, there are no running
  buffers to broadcast, and train and eval behave alike.
`norm="batch"` reproduces the reference; `norm="none"` drops normalisation.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sundae_core.errors import ConfigError, InputError

NORMS = ("group", "batch", "none")


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int = 3
    channels: int = 64
    layers: int = 3
    norm: str = "group"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"discriminator.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.layers < 1:
            raise ConfigError(f"discriminator.layers must be at least 1, got {self.layers}")
        if self.channels < 1:
            raise ConfigError(f"discriminator.channels must be at least 1, got {self.channels}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """images (b c h w) in [-1, 1] -> patch logits (b 1 h' w'); positive = judged real."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig(),
                 generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        c, use_bias = config.channels, config.norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, c, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2)]
        cin = c
        for n in range(1, config.layers + 1):
            cout = c * min(2 ** n, 8)
            stride = 2 if n < config.layers else 1  # the last hidden layer keeps the resolution
            layers += [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=use_bias),
                       _norm(config.norm, cout), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The DCGAN initialisation the reference uses: conv N(0, 0.02), norm scale N(1, 0.02)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise InputError(f"the discriminator expects images shaped (b {self.config.in_channels} h w), "
                             f"got {tuple(images.shape)}")
        return self.main(images)
