"""The dtype choices that follow the CPU: bf16 only where the CPU has bf16 kernels."""

import time

import pytest
import torch

from sundae_core import cpu_features, models
from trainers.training import device as trainer_device
from sundae_core.models import inference_dtype


def _matmul_seconds(dtype: torch.dtype, n: int = 512, runs: int = 3) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def test_the_flag_matches_what_this_cpu_does():
    # the machines seen: bf16 takes 300x float32's time without kernels (AVX2 EPYC), 3-5x where
    # oneDNN emulates it (AVX-512 Ice Lake), 0.1-1x where the chip multiplies bf16 (AMX, Zen 4);
    # 2x between leaves room for a busy machine
    ratio = _matmul_seconds(torch.bfloat16, 1024) / _matmul_seconds(torch.float32, 1024)
    if cpu_features.cpu_bf16_is_fast():
        assert ratio < 2, f"bf16 said fast but {ratio:.1f}x float32's time"
    else:
        assert ratio > 2, f"bf16 said slow but only {ratio:.1f}x float32's time"


_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: fpu sse2 avx2 {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu
"""


@pytest.mark.parametrize("extra, native", [
    ("avx512f avx512bw avx512vl avx512_vnni", False),           # Ice Lake / Cascade Lake: emulated
    ("avx512f avx512bw avx512_bf16", True),                     # Cooper Lake, AMD Zen 4
    ("avx512f avx512_bf16 amx_bf16 amx_tile amx_int8", True),   # Sapphire Rapids
    ("", False),                                                # AVX2 only
])
def test_native_bf16_is_read_from_the_first_cpus_flags(extra, native):
    flags = cpu_features.parse_cpuinfo_flags(_CPUINFO.format(extra=extra))
    assert "avx2" in flags and "spectre_v1" not in flags
    assert cpu_features.x86_has_native_bf16(flags) is native


def test_flags_unreadable_leave_onednn_to_answer(tmp_path):
    assert cpu_features.parse_cpuinfo_flags("processor : 0\n") is None
    if cpu_features.x86_cpu_flags() is not None:  # an x86 Linux machine: a missing file reads as None
        assert cpu_features.x86_cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize("fast, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_inference_runs_in_bf16_only_where_the_cpu_has_the_kernels(monkeypatch, fast, dtype):
    monkeypatch.setattr(models, "cpu_bf16_is_fast", lambda: fast)
    assert inference_dtype("cpu") == dtype
    assert inference_dtype(torch.device("cpu")) == dtype


def test_a_loaded_vqgan_decodes_in_float32_without_the_kernels(monkeypatch, tiny_models):
    monkeypatch.setattr(models, "cpu_bf16_is_fast", lambda: False)
    vqgan = models.load_vqgan(tiny_models / "vqgan.safetensors", dtype=inference_dtype("cpu"))
    assert vqgan.decoder.conv_in.weight.dtype == torch.float32
    assert vqgan.encoder_dtype == torch.float32


def test_training_asks_for_bf16_and_gets_float32_on_a_cpu_without_the_kernels(monkeypatch):
    said = []
    monkeypatch.setattr(trainer_device, "cpu_bf16_is_fast", lambda: False)
    assert not trainer_device.autocast_bf16(torch.device("cpu"), True, say=said.append)
    assert len(said) == 1 and "train.bf16" in said[0] and "float32" in said[0]
    assert not trainer_device.autocast_bf16(torch.device("cpu"), False, say=said.append)
    assert len(said) == 1  # nothing asked, nothing to say


def test_training_keeps_bf16_where_the_cpu_has_the_kernels(monkeypatch):
    said = []
    monkeypatch.setattr(trainer_device, "cpu_bf16_is_fast", lambda: True)
    assert trainer_device.autocast_bf16(torch.device("cpu"), True, say=said.append)
    assert not said
