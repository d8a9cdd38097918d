"""What this CPU computes fast, for the choices that depend on it: the inference dtype
(models.inference_dtype), the trainers' bf16 autocast (trainers/training/device.py), the linear
packing of packed_linear.py.

bf16 matmuls and convolutions on the CPU are fast only where oneDNN has bf16 kernels for the chip
(x86 with AVX-512 BW/VL/DQ, AVX512-BF16 or AMX; Arm with its bf16 extension); torch reports that as
`torch.ops.mkldnn._is_mkldnn_bf16_supported()`. Elsewhere torch falls back to reference loops: on a
2-core AMD EPYC of family 23 (AVX2 only, session 33) a 2048^3 matmul ran at 0.2 GFLOP/s in bf16
against 64 GFLOP/s in float32, and the demo that takes 59 s on an AVX-512 EPYC ran for minutes.
The answer is a fact of the machine, never a timing, so the same seed draws the same image run
after run on one machine.
"""

from __future__ import annotations

from functools import lru_cache

import torch


def amx_available() -> bool:
    """Whether this CPU has AMX (the machines where packing linears was measured to win)."""
    try:
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def cpu_bf16_is_fast() -> bool:
    """Whether bf16 matmuls and convolutions run on oneDNN's bf16 kernels on this CPU (module doc)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
