"""LayerNorm that trains right under bf16 autocast on the CPU.

torch's CPU layer_norm kernel for bf16 (or fp16) input sums the weight and bias gradients over
all rows in that precision: against a float64 reference they came out 58-67 % off over the 0.5 M
positions of the VQ-GAN's 8-channel level, and in a batch-8 step of the embedded prior (25 of its
33 norms see bf16 input under autocast) 1.4 % off at the median norm and 27 % at the worst
(docs/benchmark.md, session 26; GroupNorm and BatchNorm sum in fp32 and are fine). The kernel's
backward is also 2.5x slower than fp32's on narrow rows. So where autograd records on the CPU the
norm runs in fp32 and casts back. Inference keeps the input's dtype (as fast; fp32 copies raised
a 1024 px decode's peak from 0.35 to 0.6 GB), and CUDA's kernel already sums in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _trains_in_low_precision(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled()
            and (x.requires_grad or (weight is not None and weight.requires_grad)))


def layer_norm(x: torch.Tensor, shape: tuple[int, ...], weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float) -> torch.Tensor:
    """F.layer_norm, in fp32 where a low-precision CPU kernel would give wrong gradients."""
    if not _trains_in_low_precision(x, weight):
        return F.layer_norm(x, shape, weight, bias, eps)
    as_float = lambda t: None if t is None else t.float()
    return F.layer_norm(x.float(), shape, as_float(weight), as_float(bias), eps).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and checkpoint keys) through `layer_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
