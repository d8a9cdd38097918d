"""The 2D hourglass transformer: tests that prove the design (issue 3), not only shapes."""

import pytest
import torch
import torch.nn.functional as F

from sundae_core import hourglass
from sundae_core.config import HourglassConfig
from sundae_core.errors import InputError
from sundae_core.hourglass import Attention, Downsample, HourglassTransformer, Upsample
from sundae_core.rotary import Rotary


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _model(depth=(1, 1, 1), num_classes=0, seed=0, **kw):
    torch.manual_seed(seed)
    config = HourglassConfig(vocab_size=16, dim=32, heads=4, depth=depth, num_classes=num_classes, **kw)
    return HourglassTransformer(config).eval()


def _scores_by_position(q, k, h, w):
    """q, k: (1 heads n hd) rotated -> scores (heads h w h w)."""
    s = torch.einsum("bhid,bhjd->hij", q.double(), k.double())
    return s.reshape(s.shape[0], h, w, h, w)


def _assert_offset_only(scores, translations):
    """scores (heads h w h w) depend only on the 2D offset, and really do depend on it, per head."""
    heads, h, w = scores.shape[:3]
    for dr, dc in translations:
        a = scores[:, :h - dr, :w - dc, :h - dr, :w - dc]
        b = scores[:, dr:, dc:, dr:, dc:]  # both positions moved by (dr, dc)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    origin = scores[:, 0, 0, 0, 0]
    for head in range(heads):
        # a row offset and a column offset each change the score of every head
        assert abs(scores[head, 0, 0, 1, 0] - origin[head]) > 1e-4
        assert abs(scores[head, 0, 0, 0, 1] - origin[head]) > 1e-4
        assert abs(scores[head, 0, 0, 1, 0] - scores[head, 0, 0, 0, 1]) > 1e-4


@pytest.mark.parametrize("h, w", [(5, 7), (6, 6)])
def test_rotary_scores_depend_only_on_the_2d_offset_for_every_head(h, w):
    heads, hd = 4, 16
    g = _gen()
    # one query and one key vector per head, the same at every position: only rotary differs
    q = torch.randn(1, heads, 1, hd, generator=g).expand(1, heads, h * w, hd)
    k = torch.randn(1, heads, 1, hd, generator=g).expand(1, heads, h * w, hd)
    rotary = Rotary(h, w, hd, "cpu", torch.float32)
    scores = _scores_by_position(rotary(q), rotary(k), h, w)
    _assert_offset_only(scores, [(1, 0), (0, 1), (2, 3), (h - 1, w - 1)])
    # a rotation: it keeps norms
    torch.testing.assert_close(rotary(q).norm(dim=-1), q.norm(dim=-1))


def test_the_attention_layer_rotates_every_head(monkeypatch):
    """Capture q and k where the layer attends: every head is position-aware."""
    h, w, dim, heads = 4, 5, 32, 4
    torch.manual_seed(0)
    attn = Attention(dim, heads)
    seen = {}
    real = hourglass.attend

    def spy(q, k, v, *args):
        seen["q"], seen["k"] = q, k
        return real(q, k, v, *args)

    monkeypatch.setattr(hourglass, "attend", spy)
    x = torch.randn(1, 1, dim, generator=_gen()).expand(1, h * w, dim)  # the same token everywhere
    attn(x, rotary=Rotary(h, w, dim // heads, "cpu", torch.float32))
    scores = _scores_by_position(seen["q"], seen["k"], h, w)
    assert scores.shape[0] == heads
    _assert_offset_only(scores, [(1, 0), (0, 1), (1, 2)])


def test_short_attention_matches_the_fused_kernel_values_and_gradients():
    """Training on short sequences takes the plain-matmul path; it must be the same function."""
    for keys in (4, 49, hourglass.SHORT_KEYS + 1):
        q, k, v = (torch.randn(2, 3, keys, 16, generator=_gen(i), requires_grad=True) for i in range(3))
        out = hourglass.attend(q, k, v)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        with torch.no_grad():
            torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
        ref = F.scaled_dot_product_attention(q, k, v)
        for g, r in zip(grads, torch.autograd.grad(ref.square().sum(), (q, k, v))):
            torch.testing.assert_close(g, r)


def test_off_the_cpu_the_fused_kernel_is_used_within_its_grid_limit_only(monkeypatch):
    """CUDA's fused kernels fail on more than 65535 batch x heads (the pooling attentions of a
    GPU training batch); the meta device stands in for a GPU here."""
    fused = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: fused.append(a[0].shape) or real(*a, **kw))
    for batch, keys in ((16, 1024), (256 * 256, 4)):
        q = torch.empty(batch, 4, 1 if keys == 4 else keys, 64, device="meta")
        k = v = torch.empty(batch, 4, keys, 64, device="meta")
        assert hourglass.attend(q, k, v).shape == q.shape
    assert fused == [(16, 4, 1024, 64)]


def test_downsample_pools_exactly_its_own_2d_patch():
    dim, p, h, w = 16, 2, 4, 6
    torch.manual_seed(0)
    down = Downsample(dim, heads=2, patch=p).eval()
    x = torch.randn(1, h, w, dim, generator=_gen())
    base = down(x)
    assert base.shape == (1, h // p, w // p, dim)
    for i in range(h // p):
        for j in range(w // p):
            inside = torch.zeros(h, w, dtype=torch.bool)
            inside[i * p:(i + 1) * p, j * p:(j + 1) * p] = True
            outside = x + torch.randn(x.shape, generator=_gen(i * 10 + j)) * ~inside[None, :, :, None]
            torch.testing.assert_close(down(outside)[0, i, j], base[0, i, j], rtol=0, atol=1e-6)
            for r, c in inside.nonzero().tolist():  # every one of the patch's tokens counts
                y = x.clone()
                y[0, r, c] += torch.randn(dim, generator=_gen(r * 10 + c))  # not a constant: LayerNorm
                assert (down(y)[0, i, j] - base[0, i, j]).abs().max() > 1e-4
    # a raster-grouped pooling (the authors' bug) would mix tokens (0, 0..3) into one patch
    y = x.clone()
    y[0, 0, 2] += torch.randn(dim, generator=_gen(5))
    torch.testing.assert_close(down(y)[0, 0, 0], base[0, 0, 0], rtol=0, atol=1e-6)


def test_upsample_fills_each_patch_from_its_own_coarse_token_and_residual():
    dim, p = 16, 2
    torch.manual_seed(0)
    up = Upsample(dim, heads=2, patch=p).eval()
    coarse = torch.randn(1, 2, 3, dim, generator=_gen(1))
    residual = torch.randn(1, 4, 6, dim, generator=_gen(2))
    base = up(coarse, residual)
    assert base.shape == (1, 4, 6, dim)
    c2 = coarse.clone()
    c2[0, 1, 2] += torch.randn(dim, generator=_gen(3))  # random: LayerNorm ignores a constant shift
    changed = (up(c2, residual) - base).abs().amax(-1)[0] > 1e-5
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[2:4, 4:6] = True
    assert torch.equal(changed, expected)
    r2 = residual.clone()
    r2[0, 0, 1] += torch.randn(dim, generator=_gen(4))
    changed = (up(coarse, r2) - base).abs().amax(-1)[0] > 1e-5
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[0:2, 0:2] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("depth", [(1, 1, 1), (0, 1, 0), (1, (0, 1, 0), 1)])
def test_no_causal_leak_every_output_depends_on_every_input(depth):
    h, w = 5, 6  # 5 is not a multiple of the patch: the padded path too
    model = _model(depth)
    tokens = torch.randint(0, 16, (1, h, w), generator=_gen())
    for i, j in [(0, 0), (h - 1, w - 1)]:
        x = model.embed(tokens).detach().requires_grad_(True)  # (b h w d) the embedded input
        logits = model.head(model.norm_out(model.body(x)))
        logits[0, i, j].sum().backward()
        reach = x.grad.abs().sum(-1)[0]
        assert reach.shape == (h, w)
        assert bool((reach > 0).all()), f"output ({i}, {j}) ignores inputs at {(reach == 0).nonzero().tolist()}"


def test_class_embedding_null_class_and_label_range():
    model = _model(num_classes=3)
    tokens = torch.randint(0, 16, (2, 4, 4), generator=_gen())
    with torch.no_grad():
        a = model(tokens, torch.tensor([0, 0]))
        b = model(tokens, torch.tensor([1, 2]))
        null = model(tokens, torch.tensor([3, 3]))
        default = model(tokens)
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every sample's output changes
    assert torch.equal(null, default)  # no label means the null class
    assert model.null_label == 3
    for bad in ([4, 0], [0, -1]):
        with pytest.raises(InputError, match="out of range"):
            model(tokens, torch.tensor(bad))
    with pytest.raises(InputError, match=r"shaped \(b,\)"):
        model(tokens, torch.tensor([0]))
    with pytest.raises(InputError, match="unconditional"):
        _model()(tokens, torch.tensor([0, 0]))
    with pytest.raises(InputError, match="integer tokens"):
        model(tokens.float())
    with pytest.raises(InputError, match=r"\[0, 16\)"):  # e.g. a VQ-GAN with a larger codebook
        model(torch.full((1, 2, 2), 16))


@pytest.mark.parametrize("depth", [(1, 1, 1), (1, (1, 1, 1), 1), 2])
@pytest.mark.parametrize("h, w", [(4, 6), (3, 5), (1, 1), (7, 2), (5, 9)])
def test_any_grid_shape(depth, h, w):
    model = _model(depth)
    tokens = torch.randint(0, 16, (2, h, w), generator=_gen())
    with torch.no_grad():
        logits = model(tokens)
    assert logits.shape == (2, h, w, 16) and bool(logits.isfinite().all())
    # batch elements are independent
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[1:]), logits[1:], rtol=1e-4, atol=1e-5)


def test_nested_valley_has_two_levels_of_shortening():
    model = _model((1, (1, 1, 1), 1), shorten=4)
    assert model.body.valley.valley is not None and model.body.valley.valley.valley is None
    shapes = []
    model.body.valley.valley.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        model(torch.randint(0, 16, (1, 8, 12), generator=_gen()))
    assert shapes == [(1, 2, 3, 32)]
    # k = 9: 3x3 patches
    model = _model((1, 1, 1), shorten=9)
    shapes = []
    model.body.valley.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.randint(0, 16, (1, 7, 6), generator=_gen())).shape == (1, 7, 6, 16)
    assert shapes == [(1, 3, 2, 32)]


def test_bf16_forward_matches_fp32_loosely():
    model = _model((1, 1, 1), num_classes=3)
    tokens = torch.randint(0, 16, (2, 6, 6), generator=_gen())
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        ref = model(tokens, labels)
        low = model.to(torch.bfloat16)(tokens, labels)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.05, err
    assert (low.float().argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_attention_dropout_at_output_keeps_the_fused_kernel_and_drops_the_branch(monkeypatch):
    """With attention_dropout_at="output" no attention is asked to drop weights (so the CPU keeps
    its fused kernel at every length) and the dropout moves to the attention branch's output; the
    weights, and the model in eval mode, are the same as with "weights"."""
    import dataclasses

    config = HourglassConfig(vocab_size=16, dim=32, heads=2, depth=(1, 1, 1), shorten=4, dropout=0.5)
    asked = []
    real = hourglass.attend
    monkeypatch.setattr(hourglass, "attend", lambda q, k, v, dropout=0.0: asked.append(dropout) or real(q, k, v, dropout))
    tokens = torch.randint(0, 16, (2, 4, 4))
    torch.manual_seed(0)
    on_weights = HourglassTransformer(config).train()
    on_weights(tokens)
    assert 0.5 in asked  # the block attentions drop weights
    asked.clear()
    torch.manual_seed(0)
    on_output = HourglassTransformer(dataclasses.replace(config, attention_dropout_at="output")).train()
    assert on_output.state_dict().keys() == on_weights.state_dict().keys()
    assert all(torch.equal(on_output.state_dict()[k], v) for k, v in on_weights.state_dict().items())
    first, second = on_output(tokens), on_output(tokens)
    assert set(asked) == {0.0} and not torch.equal(first, second)  # dropout still acts, elsewhere
    branch = lambda model: {m.attn_dropout.p for m in model.modules() if isinstance(m, hourglass.Block)}
    assert branch(on_output) == {0.5} and branch(on_weights) == {0.0}
    on_output.eval(), on_weights.eval()
    with torch.no_grad():
        assert torch.allclose(on_output(tokens), on_weights(tokens))
    with pytest.raises(Exception, match="attention_dropout_at"):
        HourglassConfig(attention_dropout_at="everywhere")
