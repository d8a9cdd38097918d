"""The VQ-GAN first stage (issue 5): shapes for any f, straight-through gradients, the quantizer's
loss with beta on the commitment term, dead-code restart, l2-normalised codes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sundae_core.config import VQGANConfig
from sundae_core.errors import InputError
from sundae_core.quantize import VectorQuantizer
from sundae_core.vqgan import NORMS, VQGAN, ResnetBlock, Upsample, channels_last


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _vqgan(levels=2, seed=0, **kw):
    torch.manual_seed(seed)
    config = VQGANConfig(resolution=32, ch=8, ch_mult=(1,) * levels, num_res_blocks=1, attn_resolutions=(),
                         z_channels=4, embed_dim=4, n_embed=16, **kw)
    return VQGAN(config).eval()


@pytest.mark.parametrize("f", [4, 8, 16, 32])
def test_encode_decode_shapes_for_every_factor(f):
    model = _vqgan(levels=f.bit_length())  # len(ch_mult) = log2(f) + 1
    assert model.factor == f
    images = torch.rand(2, 3, 2 * f, 3 * f, generator=_gen()) * 2 - 1  # non-square
    with torch.no_grad():
        tokens = model.encode(images)
        assert tokens.shape == (2, 2, 3) and tokens.dtype == torch.int64
        assert int(tokens.min()) >= 0 and int(tokens.max()) < 16
        out = model.decode(tokens)
        assert out.shape == images.shape and out.dtype == torch.float32
        assert out.min() >= -1 and out.max() <= 1
        assert torch.equal(model.encode(images), tokens)  # deterministic
        rec, q = model(images)
        assert rec.shape == images.shape and torch.equal(q.tokens, tokens)


def test_attention_levels_and_bad_inputs():
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                              z_channels=4, embed_dim=4, n_embed=16)).eval()
    assert any("attn" in k for k in model.state_dict() if k.startswith("encoder.down.1"))
    with torch.no_grad():
        assert model.decode(model.encode(torch.zeros(1, 3, 16, 24))).shape == (1, 3, 16, 24)
    with pytest.raises(InputError, match="multiple of the VQ-GAN factor 2"):
        model.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(InputError, match=r"\(b 3 h w\)"):
        model.encode(torch.zeros(3, 16, 16))
    with pytest.raises(InputError, match=r"\[0, 16\)"):
        model.decode(torch.full((1, 2, 2), 16))


def test_gradients_reach_the_encoder_through_the_straight_through_estimator():
    model = _vqgan(levels=3).train()
    images = torch.rand(2, 3, 16, 16, generator=_gen()) * 2 - 1
    rec, q = model(images)
    (rec - images).abs().mean().backward()  # the reconstruction loss alone, no quantizer loss
    for name in ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the codebook gets no gradient from the reconstruction (only from the quantizer loss)
    assert model.quantize.embedding.weight.grad is None or not model.quantize.embedding.weight.grad.any()
    # forward value is exactly the codeword
    z = model.encode_latents(images)
    torch.testing.assert_close(model.quantize(z).z_q, model.quantize.lookup(model.quantize.nearest(z)))


@pytest.mark.parametrize("beta", [0.25, 0.7])
def test_quantizer_loss_puts_beta_on_the_commitment_term(beta):
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, beta=beta)
    vq.embedding.weight.data = torch.randn(8, 4, generator=_gen(1))
    z = torch.randn(2, 4, 3, 3, generator=_gen(2), requires_grad=True)
    q = vq(z)
    e = vq.lookup(q.tokens)
    # value: ||sg[z] - e||^2 + beta * ||z - sg[e]||^2 (both means over all elements)
    sq = (z.detach() - e.detach()).pow(2).mean()
    torch.testing.assert_close(q.loss, sq * (1 + beta))
    q.loss.backward()
    n = z.numel()
    # encoder side: only the commitment term reaches z, scaled by beta
    torch.testing.assert_close(z.grad, beta * 2 * (z - e).detach() / n)
    # codebook side: the codebook term, unscaled (the reference's "legacy" mode swaps these)
    expected = torch.zeros(8, 4)
    expected.index_add_(0, q.tokens.flatten(), (2 * (e - z) / n).detach().permute(0, 2, 3, 1).reshape(-1, 4))
    torch.testing.assert_close(vq.embedding.weight.grad, expected)


def test_code_usage_statistics():
    vq = VectorQuantizer(4, 2)
    vq.embedding.weight.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    z = torch.tensor([[0.1, 0.2], [9.0, 0.5], [0.2, 0.1], [9.5, 0.3]]).t().reshape(1, 2, 2, 2)
    q = vq(z)
    assert q.tokens.flatten().tolist() == [0, 1, 0, 1]
    assert q.usage.item() == 0.5
    assert q.perplexity.item() == pytest.approx(2.0, rel=1e-4)


def test_dead_code_restart():
    vq = VectorQuantizer(6, 3)
    before = vq.embedding.weight.detach().clone()
    z = torch.randn(2, 3, 4, 4, generator=_gen())
    counts = torch.tensor([5.0, 0.0, 2.0, 0.0, 1.0, 0.0])
    assert vq.restart_dead_codes(z, counts, generator=_gen(1)) == 3
    after = vq.embedding.weight.detach()
    live = torch.tensor([0, 2, 4])
    assert torch.equal(after[live], before[live])  # used codes untouched
    candidates = z.permute(0, 2, 3, 1).reshape(-1, 3)
    for code in (1, 3, 5):  # dead codes now sit on encoder outputs
        assert (candidates - after[code]).abs().sum(1).min() == 0
    # seeded: the same generator picks the same outputs
    vq2 = VectorQuantizer(6, 3)
    vq2.embedding.weight.data = before.clone()
    vq2.restart_dead_codes(z, counts, generator=_gen(1))
    assert torch.equal(vq2.embedding.weight, after)
    # nothing dead, nothing changes; a threshold counts rarely used codes as dead
    assert vq.restart_dead_codes(z, torch.ones(6), generator=_gen()) == 0
    assert vq.restart_dead_codes(z, torch.tensor([5.0, 1, 1, 1, 1, 1]), generator=_gen(), threshold=1) == 5


def test_l2_normalised_codes():
    vq = VectorQuantizer(8, 4, l2_normalize=True)
    vq.embedding.weight.data = torch.randn(8, 4, generator=_gen()) * 3
    torch.testing.assert_close(vq.codebook().norm(dim=1), torch.ones(8))
    z = torch.randn(2, 4, 3, 3, generator=_gen(1)) * 5
    q = vq(z)
    torch.testing.assert_close(q.z_q.norm(dim=1), torch.ones(2, 3, 3))
    # nearest by cosine: scaling the input does not change the codes
    assert torch.equal(vq.nearest(z * 0.01), q.tokens)
    cos = F.normalize(z, dim=1).permute(0, 2, 3, 1) @ vq.codebook().t()
    assert torch.equal(q.tokens, cos.argmax(-1))
    # the whole model encodes and decodes with l2 codes
    model = _vqgan(levels=2, l2_normalize_codes=True)
    with torch.no_grad():
        assert model.decode(model.encode(torch.zeros(1, 3, 8, 8))).shape == (1, 3, 8, 8)


def test_bf16_model_encodes_and_decodes():
    model = _vqgan(levels=3)
    images = torch.rand(1, 3, 16, 16, generator=_gen()) * 2 - 1
    with torch.no_grad():
        ref_tokens = model.encode(images)
        ref = model.decode(ref_tokens)  # the float32 model: the reference
        model = model.to(torch.bfloat16)
        tokens = model.encode(images)
        out = model.decode(tokens)
        out_same_tokens = model.decode(ref_tokens)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # bf16 keeps about 3 significant digits: it picks the float32 model's codes (a near tie may flip one)
    assert (tokens == ref_tokens).float().mean() >= 0.9
    # and decodes the same tokens to the same picture up to bf16 rounding
    torch.testing.assert_close(out_same_tokens, ref, atol=0.1, rtol=0)
    assert (out_same_tokens - ref).abs().mean() < 0.02
    if torch.equal(tokens, ref_tokens):
        assert torch.equal(out, out_same_tokens)


@pytest.mark.parametrize("cin,cout,norm", [(8, 8, "group"), (8, 16, "group"), (8, 8, "channel")])
def test_resnet_block_without_gradients_computes_what_it_computes_with_them(cin, cout, norm):
    """Inference runs the block in place (fewer megapixel buffers) with the residual added by the
    last convolution (conv_plus); the result must not change beyond rounding (the fused add skips
    one bf16 rounding of the conv's output), in fp32 and in the bf16 channels-last layout decoding
    uses, and the input must stay intact."""
    torch.manual_seed(0)
    block = ResnetBlock(cin, cout, 0.0, NORMS[norm]).eval()
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        block = block.to(dtype).to(memory_format=torch.channels_last)
        x = channels_last(torch.randn(2, cin, 6, 10).to(dtype))
        kept = x.clone()
        with torch.enable_grad():
            reference = block(x)
        with torch.inference_mode():
            fast = block(x)
        assert torch.equal(x, kept)
        torch.testing.assert_close(fast.float(), reference.detach().float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_upsample_in_sub_pixel_form_is_the_nearest_upsample_and_conv(layout):
    """Inference upsamples with 2 x 2 phase kernels on the low-resolution input; it must give what
    the reference's nearest 2x + 3 x 3 conv gives: to float32 rounding in fp32, within bf16
    rounding in bf16, on odd sizes and a batch, and again after the weights change in place."""
    torch.manual_seed(0)
    up = Upsample(6).eval()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 0.05)):
        up = up.to(dtype).to(memory_format=fmt)
        x = torch.randn(2, 6, 5, 7).to(dtype).contiguous(memory_format=fmt)
        for _ in range(2):
            with torch.enable_grad():
                reference = up(x).detach()
            with torch.no_grad():
                fast = up(x)
            assert fast.shape == reference.shape == (2, 6, 10, 14)
            assert fast.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(fast.float(), reference.float(), atol=tol, rtol=tol)
            # the reference itself, spelled out
            spelled = F.conv2d(F.interpolate(x.float(), scale_factor=2.0, mode="nearest"),
                               up.conv.weight.float(), up.conv.bias.float(), padding=1)
            torch.testing.assert_close(fast.float(), spelled, atol=tol * 2, rtol=tol * 2)
            with torch.no_grad():  # loaded in place: the phase kernels must follow
                up.conv.weight.mul_(-0.5)
                up.conv.bias.add_(1.0)


def test_conv_plus_is_the_conv_and_the_sum_on_either_path():
    """The fused residual add (oneDNN's binary post-op on the CPU) and the plain fallback (here a
    reflect-padded conv, which the post-op does not take) both give conv(x) + other, leaving other
    and x intact."""
    from sundae_core.vqgan import conv_plus
    torch.manual_seed(0)
    x, other = torch.randn(2, 4, 6, 5), torch.randn(2, 6, 6, 5)
    for conv in (nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
                 nn.Conv2d(4, 6, 1)):
        kept_x, kept_other = x.clone(), other.clone()
        with torch.no_grad():
            got = conv_plus(conv, x, other)
            torch.testing.assert_close(got, conv(x) + other, atol=1e-5, rtol=1e-5)
        assert torch.equal(x, kept_x) and torch.equal(other, kept_other)
