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
    # the machines seen: bf16 0.2 GFLOP/s against float32's 64 without the kernels (AVX2 EPYC),
    # as fast or faster with them; 5x either way leaves room for a busy machine
    ratio = _matmul_seconds(torch.bfloat16) / _matmul_seconds(torch.float32)
    if cpu_features.cpu_bf16_is_fast():
        assert ratio < 5, f"bf16 said fast but {ratio:.1f}x float32's time"
    else:
        assert ratio > 5, f"bf16 said slow but only {ratio:.1f}x float32's time"


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
