"""Packed linear layers (issue 20): the eager CPU fast path computes what the plain layers do, and
every case where the packed copy would be wrong (gradients, a cast, a changed weight) takes the
plain path instead."""

import copy

import pytest
import torch
from torch import nn

from sundae_core import packed_linear
from sundae_core.config import HourglassConfig
from sundae_core.hourglass import Block, HourglassTransformer
from sundae_core.packed_linear import PackedLinear, pack_for_cpu_inference, pack_linears

pytestmark = pytest.mark.skipif(not packed_linear.packing_supported(), reason="no oneDNN bf16 linear ops here")

CONFIG = HourglassConfig(vocab_size=64, dim=64, heads=2, depth=(1, (1, 2, 1), 1), num_classes=3)


def _pair():
    torch.manual_seed(0)
    plain = HourglassTransformer(CONFIG).to(torch.bfloat16).eval()
    return plain, pack_linears(copy.deepcopy(plain))


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 64, (2, 8, 8), generator=g), torch.tensor([0, 3])


def test_packed_prior_gives_the_plain_logits_within_bf16_rounding():
    plain, packed = _pair()
    assert not any(type(m) is nn.Linear for m in packed.modules())
    mlps = [m.mlp for m in packed.modules() if isinstance(m, Block)]
    assert mlps and all(mlp[0].activation == "gelu" and isinstance(mlp[1], nn.Identity) for mlp in mlps)
    tokens, labels = _inputs()
    with torch.inference_mode():
        a, b = plain(tokens, labels).float(), packed(tokens, labels).float()
    assert (a - b).abs().max() <= 0.02 * a.abs().max()
    # the same parameters under the same names: export and digests see an ordinary model
    assert packed.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(packed.state_dict()[k], v) for k, v in plain.state_dict().items())


def test_gradients_and_casts_take_the_plain_path_exactly():
    plain, packed = _pair()
    tokens, labels = _inputs()
    assert torch.equal(packed(tokens, labels), plain(tokens, labels))  # grad enabled: plain F.linear
    plain32, packed32 = plain.float(), packed.float()  # the cast drops the packed copies
    with torch.inference_mode():
        assert torch.equal(packed32(tokens, labels), plain32(tokens, labels))


def _packed_after_first_use():
    """A bf16 Linear, a PackedLinear of a copy that has packed its weight once, and an input."""
    linear = nn.Linear(16, 8).to(torch.bfloat16)
    packed = PackedLinear(copy.deepcopy(linear))
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    with torch.inference_mode():
        packed(x)
    return linear, packed, x


def _assert_same_output(linear, packed, x):
    with torch.inference_mode():
        expected, got = linear(x).float(), packed(x).float()
    assert (expected - got).abs().max() <= 0.02 * expected.abs().max()


def test_a_weight_changed_in_place_is_packed_again():
    linear, packed, x = _packed_after_first_use()
    with torch.no_grad():
        linear.weight.mul_(-2)
        packed.load_state_dict(linear.state_dict())
    _assert_same_output(linear, packed, x)


def test_a_cast_drops_the_packed_copy():
    linear, packed, x = _packed_after_first_use()
    packed.float()
    with torch.no_grad():
        packed.weight.mul_(-2)  # new weights reach the module in fp32, then back to bf16
    packed.to(torch.bfloat16)
    linear.load_state_dict(packed.state_dict())
    _assert_same_output(linear, packed, x)


@pytest.mark.parametrize("amx", [True, False])
def test_models_are_packed_only_in_bf16_on_an_amx_cpu(monkeypatch, amx):
    monkeypatch.setattr(packed_linear, "amx_available", lambda: amx)
    torch.manual_seed(0)
    model = pack_for_cpu_inference(HourglassTransformer(CONFIG).to(torch.bfloat16))
    assert any(isinstance(m, PackedLinear) for m in model.modules()) == amx
    fp32 = pack_for_cpu_inference(HourglassTransformer(CONFIG))
    assert not any(isinstance(m, PackedLinear) for m in fp32.modules())
