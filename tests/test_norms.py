"""The norms under bf16 autocast on the CPU, as the VQ-GAN and the prior train: their gradients
must match a float64 reference. torch's CPU layer_norm kernel for bf16 input sums the weight and
bias gradients in bf16: over the 32 K positions here they came out 20-30 % off (58 % over a
VQ-GAN training batch's 0.5 M), and both models trained on such gradients until session 26."""

import torch
import torch.nn.functional as F
from torch import nn

from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.norms import LayerNorm
from sundae_core.vqgan import ChannelNorm


def _reference(x, norm, grad):
    x64 = x.detach().double().requires_grad_(True)
    w64 = norm.weight.detach().double().requires_grad_(True)
    b64 = norm.bias.detach().double().requires_grad_(True)
    y = F.layer_norm(x64.permute(0, 2, 3, 1), x.shape[1:2], w64, b64, norm.eps).permute(0, 3, 1, 2)
    return (y, *torch.autograd.grad(y, (x64, w64, b64), grad.double()))


def test_channel_norm_gradients_under_bf16_autocast_match_float64():
    g = torch.Generator().manual_seed(0)
    channels = 8  # the widest levels of the f = 32 VQ-GAN have 8 channels: the most positions
    x = torch.randn(2, channels, 128, 128, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    norm = ChannelNorm(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=g))
        norm.bias.copy_(torch.randn(channels, generator=g))
    grad = torch.randn(x.shape, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    dx, dw, db = torch.autograd.grad(y, (x, norm.weight, norm.bias), grad)
    y64, dx64, dw64, db64 = _reference(x, norm, grad)
    assert (y.double() - y64).abs().max() <= 0.02 * y64.abs().max()  # bf16 output rounding
    assert (dx.double() - dx64).abs().max() <= 0.01 * dx64.abs().max()
    for got, want in ((dw, dw64), (db, db64)):  # summed over 32 K positions
        assert got.dtype == torch.float32
        assert (got.double() - want).abs().max() <= 1e-3 * want.abs().max()


def test_channel_norm_keeps_bf16_weights_and_input_dtype_for_inference():
    norm = ChannelNorm(16).bfloat16().eval()
    x = torch.randn(1, 16, 8, 8).bfloat16()
    with torch.inference_mode():
        y = norm(x)
    assert y.dtype == torch.bfloat16
    want = F.layer_norm(x.float().permute(0, 2, 3, 1), (16,), eps=norm.eps).permute(0, 3, 1, 2)
    assert torch.allclose(y.float(), want, atol=0.02)


def test_layer_norm_gradients_over_wide_rows_under_bf16_autocast_match_float64():
    g = torch.Generator().manual_seed(1)
    norm = LayerNorm(256)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(256, generator=g))
        norm.bias.copy_(torch.randn(256, generator=g))
    x = torch.randn(4, 1024, 256, generator=g).bfloat16().requires_grad_(True)  # a batch of 32 x 32 grids
    grad = torch.randn(x.shape, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    dw, db = torch.autograd.grad(y, (norm.weight, norm.bias), grad)
    w64, b64 = (p.detach().double().requires_grad_(True) for p in (norm.weight, norm.bias))
    y64 = F.layer_norm(x.detach().double(), (256,), w64, b64, norm.eps)
    dw64, db64 = torch.autograd.grad(y64, (w64, b64), grad.double())
    for got, want in ((dw, dw64), (db, db64)):
        assert (got.double() - want).norm() <= 1e-3 * want.norm()


def test_every_norm_of_the_prior_is_the_fp32_training_layer_norm():
    model = HourglassTransformer(HourglassConfig(vocab_size=16, dim=32, heads=2, depth=(1, 1, 1)))
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(type(m) is LayerNorm for m in norms)
