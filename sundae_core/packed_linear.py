"""Linear layers with their weights prepacked for oneDNN, for eager bf16 inference on AMX CPUs.

An eager `nn.Linear` hands oneDNN a plain weight at every call, which reorders it into its own
blocked layout first; `torch.compile`'s freezing packs weights once instead (compiled.py), but
compiling costs tens of seconds. Packing once at load time gives the eager path the same kernels:
on an Intel Xeon with AMX, 2 threads, bf16, the FFHQ1024 prior's shapes ran 10-35 % faster per
linear (M = 256, 1024 -> 4096 with its GELU fused: 1.36 -> 0.95 ms; M = 1024, 1024 -> 1024: 1.80
-> 1.55 ms). The ops are the ones Inductor's freezing emits (`torch.ops.mkldnn`).

A PackedLinear keeps its plain `weight` (state_dict, export, `.to()`, training all see an ordinary
Linear) and uses the packed copy only where it is valid: no autograd, not compiling, a CPU bf16
input, and a weight unchanged since packing (an in-place load repacks; see weights_key). Anything
else takes the plain path, so a packed model is never wrong, only sometimes not faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_features import amx_available, cpu_bf16_is_fast

ACTIVATIONS = ("none", "gelu")


def packing_supported() -> bool:
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight") and cpu_bf16_is_fast())


def weights_key(*tensors: torch.Tensor | None) -> tuple[tuple[int, int], ...]:
    """What a copy derived from these tensors is valid for: their storage and version (an in-place
    load bumps the version). Tensors created under inference_mode have no version counter: a model
    loaded that way is derived from once (changing its weights in place inside inference_mode goes
    unseen)."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors if t is not None)


class PackedLinear(nn.Linear):
    """nn.Linear (optionally followed by GELU) with a oneDNN-packed copy of its bf16 weight."""

    def __init__(self, linear: nn.Linear, activation: str = "none"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device="meta")
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters, not copies
        self.activation = activation
        self._packed: torch.Tensor | None = None
        self._packed_key: tuple[int, int] | None = None

    def _packed_weight(self) -> torch.Tensor:
        key = weights_key(self.weight)
        if self._packed is None or self._packed_key != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
            self._packed_key = key
        return self._packed

    def _apply(self, fn, recurse=True):
        self._packed = None  # a move or cast leaves the packed copy behind
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (not torch.is_grad_enabled() and not torch.compiler.is_compiling() and x.device.type == "cpu"
                and x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16)
        if fast:
            return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias, self.activation, [],
                                                      "none" if self.activation == "gelu" else None)
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.activation == "gelu" else y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation}"


def pack_linears(model: nn.Module) -> nn.Module:
    """Every nn.Linear of `model` (in place) as a PackedLinear; a Linear followed by GELU in an
    nn.Sequential takes the GELU in (the GELU becomes Identity). Returns the model."""
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if type(module[i]) is nn.Linear and type(module[i + 1]) is nn.GELU \
                        and module[i + 1].approximate == "none":
                    module[i], module[i + 1] = PackedLinear(module[i], "gelu"), nn.Identity()
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child))
    return model


def pack_for_cpu_inference(model: nn.Module) -> nn.Module:
    """pack_linears where it was measured to win: bf16 weights on an AMX CPU with oneDNN's bf16
    ops; any other model is returned as it is."""
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cpu" or p.dtype != torch.bfloat16:
        return model
    if not (amx_available() and packing_supported()):
        return model
    return pack_linears(model)
