"""What this CPU computes fast, for the choices that depend on it: the inference dtype
(models.inference_dtype), the trainers' bf16 autocast (trainers/training/device.py), the linear
packing of packed_linear.py.

bf16 matmuls and convolutions on the CPU are fast only where the chip multiplies bf16 itself: x86
with AVX512-BF16 or AMX-BF16 (Intel Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later),
Arm with its bf16 extension. Elsewhere they are slower than float32:
- without AVX-512 (AMD Zen 3 and older, many Intel desktops) oneDNN has no bf16 kernels and torch
  falls back to reference loops: on a 2-core EPYC of family 23 a 2048^3 matmul ran at 0.2 GFLOP/s
  in bf16 against 64 in float32 (session 33), and the demo ran for minutes;
- with AVX-512 but without its bf16 instructions (Intel Skylake-SP, Cascade Lake, Ice Lake) oneDNN
  reports bf16 support (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`) and emulates it: on a
  2-core Ice Lake Xeon 60 GFLOP/s in bf16 against 208 in float32, convolutions 59 against 144
  (session 35).
So on x86 the CPU's own flags decide (torch.cpu.get_capabilities, read by the cpuinfo library on
every OS); elsewhere oneDNN's answer, which is right on Arm. The answer is a fact of the machine,
never a timing, so the same seed draws the same image run after run on one machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch

# the x86 capabilities (torch.cpu.get_capabilities' names) of instructions that multiply bf16 in hardware
_X86_BF16 = ("avx512_bf16", "amx_bf16")


def amx_available() -> bool:
    """Whether this CPU has AMX (the machines where packing linears was measured to win)."""
    try:
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def cpu_bf16_is_fast() -> bool:
    """Whether bf16 matmuls and convolutions run faster than float32 on this CPU (module doc)."""
    try:
        onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    capabilities = cpu_capabilities()
    if not str(capabilities.get("architecture", "")).startswith("x86"):
        return onednn
    return onednn and x86_has_native_bf16(capabilities)


def x86_has_native_bf16(capabilities: Mapping[str, object]) -> bool:
    """Whether an x86 CPU with these capabilities (torch.cpu.get_capabilities) multiplies bf16 in
    hardware."""
    return any(bool(capabilities.get(name)) for name in _X86_BF16)


def cpu_capabilities() -> Mapping[str, object]:
    """torch.cpu.get_capabilities(), or {} where this torch has none (the caller then keeps
    oneDNN's answer)."""
    try:
        return torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return {}
