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
So on x86 Linux the CPU's own flags decide (/proc/cpuinfo); elsewhere oneDNN's answer, which is
right on Arm and wrong only on those AVX-512 chips. The answer is a fact of the machine, never a
timing, so the same seed draws the same image run after run on one machine.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import torch

# the x86 flags (as Linux names them) of instructions that multiply bf16 in hardware
_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


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
    flags = x86_cpu_flags()
    return onednn and (flags is None or x86_has_native_bf16(flags))


def x86_has_native_bf16(flags: frozenset[str]) -> bool:
    """Whether an x86 CPU with these /proc/cpuinfo flags multiplies bf16 in hardware."""
    return bool(flags & _X86_BF16_FLAGS)


def x86_cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str] | None:
    """The first CPU's flags from /proc/cpuinfo on an x86 machine; None on other architectures or
    where the file cannot be read (macOS, Windows: oneDNN's answer stands there)."""
    if platform.machine().lower() not in {"x86_64", "amd64", "i386", "i686"}:
        return None
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    return parse_cpuinfo_flags(text)


def parse_cpuinfo_flags(text: str) -> frozenset[str] | None:
    """The `flags` line of the first processor in /proc/cpuinfo's text, as a set; None if absent."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return None
