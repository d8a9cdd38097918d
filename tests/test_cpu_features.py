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


@pytest.mark.parametrize("flags, native", [
    ({"avx512f": True, "avx512_vnni": True, "avx512_bf16": False}, False),  # Ice Lake / Cascade Lake: emulated
    ({"avx512f": True, "avx512_bf16": True}, True),                          # Cooper Lake, AMD Zen 4
    ({"avx512_bf16": True, "amx_bf16": True, "amx_tile": True}, True),       # Sapphire Rapids
    ({"avx2": True}, False),                                                 # AVX2 only
])
def test_native_bf16_is_read_from_the_cpus_own_flags(flags, native):
    assert cpu_features.x86_has_native_bf16(flags) is native


@pytest.mark.parametrize("architecture, native, onednn, fast", [
    ("x86_64", True, True, True), ("x86_64", False, True, False),  # oneDNN's emulation on AVX-512 is not fast
    ("x86_64", True, False, False),                                # no oneDNN bf16 at all
    ("arm64", False, True, True), ("", False, True, True),         # elsewhere (or unknown) oneDNN decides
])
def test_the_flags_overrule_onednn_on_x86_only(monkeypatch, architecture, native, onednn, fast):
    monkeypatch.setattr(cpu_features, "cpu_capabilities",
                        lambda: {"architecture": architecture, "avx512_bf16": native} if architecture else {})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    cpu_features.cpu_bf16_is_fast.cache_clear()
    try:
        assert cpu_features.cpu_bf16_is_fast() is fast
    finally:
        cpu_features.cpu_bf16_is_fast.cache_clear()


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
